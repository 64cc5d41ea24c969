package fs

import (
	"context"
	"fmt"
	"os"
	"runtime"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Mkdir creates a directory: with parents like mkdir -p (an existing
// directory is fine), else exactly one (EEXIST if present, NOT_FOUND without
// a parent). A non-zero mode is then set exactly, umask notwithstanding.
func (s *Service) Mkdir(_ context.Context, req *agentpb.FsMkdirRequest) (*agentpb.FsMkdirResponse, error) {
	p, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_mkdir: %w", err)
	}
	if req.GetParents() {
		err = os.MkdirAll(p, 0o777)
	} else {
		err = os.Mkdir(p, 0o777)
	}
	if err != nil {
		return nil, agenterr.FromIO("mkdir "+p, err)
	}
	// Windows has no permission bits to set.
	if m := req.GetMode(); m != 0 && runtime.GOOS != "windows" {
		if err := os.Chmod(p, fileMode(m)); err != nil {
			return nil, agenterr.FromIO("chmod "+p, err)
		}
	}
	return &agentpb.FsMkdirResponse{}, nil
}
