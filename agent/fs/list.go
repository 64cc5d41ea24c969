package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// List lists a directory, entries sorted by name and described without
// following symlinks; paths are relative to the listed directory. Recursive
// walks depth-first (each directory's children right after it) and does not
// enter symlinked directories.
//
// Entries that vanish during the walk are skipped, and so are the children
// of subdirectories that cannot be read (the directory entry itself is
// listed, its mode says why). A listing that would not fit the reply stops
// with PAYLOAD_TOO_LARGE.
func (s *Service) List(ctx context.Context, req *agentpb.FsListRequest) (*agentpb.FsListResponse, error) {
	root, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_list: %w", err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, agenterr.FromIO("readdir "+root, err)
	}
	l := &lister{ctx: ctx, root: root, limit: budget(ctx), recursive: req.GetRecursive()}
	if err := l.walk(root, "", ents); err != nil {
		return nil, err
	}
	return &agentpb.FsListResponse{Entries: l.entries}, nil
}

type lister struct {
	ctx       context.Context
	root      string
	limit     int
	recursive bool
	size      int // encoded size of entries so far
	entries   []*agentpb.FsEntry
}

// walk appends ents (read from dir, whose path relative to the root is rel).
func (l *lister) walk(dir, rel string, ents []os.DirEntry) error {
	for _, de := range ents {
		if err := l.ctx.Err(); err != nil {
			return fmt.Errorf("fs_list %s: %w", l.root, err)
		}
		full := filepath.Join(dir, de.Name())
		fi, err := de.Info() // lstat
		if errors.Is(err, iofs.ErrNotExist) {
			continue
		}
		if err != nil {
			return agenterr.FromIO("stat "+full, err)
		}
		relPath := filepath.Join(rel, de.Name())
		if err := l.add(entryFor(de.Name(), relPath, fi)); err != nil {
			return err
		}
		if !l.recursive || !fi.IsDir() {
			continue
		}
		children, err := os.ReadDir(full)
		if err != nil && !errors.Is(err, iofs.ErrNotExist) && !errors.Is(err, iofs.ErrPermission) {
			return agenterr.FromIO("readdir "+full, err)
		}
		if err := l.walk(full, relPath, children); err != nil {
			return err
		}
	}
	return nil
}

func (l *lister) add(e *agentpb.FsEntry) error {
	l.size += protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(e))
	if l.size > l.limit {
		return agenterr.TooLarge(map[string]string{
			"op":          "fs_list",
			"entries":     strconv.Itoa(len(l.entries)),
			"max_payload": strconv.Itoa(opctx.ReplyLimit(l.ctx)),
		}, "fs_list %s: the listing exceeds what a reply on this connection can carry after %d entries; list subdirectories separately or without recursive",
			l.root, len(l.entries))
	}
	l.entries = append(l.entries, e)
	return nil
}
