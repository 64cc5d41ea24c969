package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Stat describes a path without following a final symlink. A missing path
// is a result (exists=false), not an error; other failures (a parent that is
// a file: ENOTDIR, EACCES) are errors. entry.path is the request path
// verbatim, entry.name the resolved path's last component.
func (s *Service) Stat(_ context.Context, req *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
	p, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_stat: %w", err)
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, iofs.ErrNotExist) {
		return &agentpb.FsStatResponse{Exists: false}, nil
	}
	if err != nil {
		return nil, agenterr.FromIO("stat "+p, err)
	}
	return &agentpb.FsStatResponse{Exists: true, Entry: entryFor(baseName(p), req.GetPath(), fi)}, nil
}
