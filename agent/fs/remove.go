package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Remove deletes a path without following a final symlink: a directory with
// recursive as a tree, else only when empty (ENOTEMPTY otherwise); a file or
// symlink is unlinked. A missing path is NOT_FOUND.
func (s *Service) Remove(_ context.Context, req *agentpb.FsRemoveRequest) (*agentpb.FsRemoveResponse, error) {
	p, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_remove: %w", err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		return nil, agenterr.FromIO("remove "+p, err)
	}
	switch {
	case fi.IsDir() && req.GetRecursive():
		// Like rm's --preserve-root: one bad request must not wipe a machine.
		if filepath.Dir(p) == p {
			return nil, agenterr.Invalid("remove %s: refusing to remove a filesystem root", p)
		}
		err = os.RemoveAll(p)
	default:
		// rmdir for a directory (ENOTEMPTY when not empty), unlink otherwise.
		err = os.Remove(p)
	}
	if err != nil {
		return nil, agenterr.FromIO("remove "+p, err)
	}
	return &agentpb.FsRemoveResponse{}, nil
}
