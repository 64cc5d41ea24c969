package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Move renames from to to. Without overwrite an existing destination is
// EEXIST, checked atomically where the OS can (Linux renameat2, macOS
// renamex_np, Windows MoveFileEx). Across filesystems a file or symlink is
// copied and the source removed; a directory fails with EXDEV.
func (s *Service) Move(_ context.Context, req *agentpb.FsMoveRequest) (*agentpb.FsMoveResponse, error) {
	from, err := s.root.Resolve(req.GetFrom())
	if err != nil {
		return nil, fmt.Errorf("fs_move from: %w", err)
	}
	to, err := s.root.Resolve(req.GetTo())
	if err != nil {
		return nil, fmt.Errorf("fs_move to: %w", err)
	}
	what := "move " + from + " -> " + to
	// A missing source is NOT_FOUND even when the destination exists too.
	fi, err := os.Lstat(from)
	if err != nil {
		return nil, agenterr.FromIO(what, err)
	}
	err = rename(from, to, req.GetOverwrite())
	if err != nil && isCrossDevice(err) && !fi.IsDir() {
		err = moveAcross(from, to, fi, req.GetOverwrite())
	}
	if err != nil {
		return nil, agenterr.FromIO(what, err)
	}
	return &agentpb.FsMoveResponse{}, nil
}

func isCrossDevice(err error) bool { return errors.Is(err, errCrossDevice) }

func rename(from, to string, overwrite bool) error {
	if overwrite {
		return renameReplace(from, to)
	}
	return renameNoReplace(from, to)
}

// renameChecked is the non-atomic no-replace rename, for systems without
// one: a destination appearing between the check and the rename is
// overwritten.
func renameChecked(from, to string) error {
	if _, err := os.Lstat(to); err == nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: errExist}
	} else if !errors.Is(err, iofs.ErrNotExist) {
		return err
	}
	return renameReplace(from, to)
}

// moveAcross copies a file or symlink to a temp name beside to, renames it
// into place and then removes from.
func moveAcross(from, to string, fi iofs.FileInfo, overwrite bool) error {
	tmp, err := copyBeside(from, to, fi)
	if err != nil {
		return err
	}
	if err := rename(tmp, to, overwrite); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Remove(from); err != nil {
		return fmt.Errorf("copied to the destination but could not remove the source: %w", err)
	}
	return nil
}

func copyBeside(from, to string, fi iofs.FileInfo) (string, error) {
	dir, base := filepath.Dir(to), filepath.Base(to)
	if fi.Mode()&iofs.ModeSymlink != 0 {
		dest, err := os.Readlink(from)
		if err != nil {
			return "", err
		}
		tmp := tempName(dir, base)
		return tmp, os.Symlink(dest, tmp)
	}
	if !fi.Mode().IsRegular() {
		return "", &os.LinkError{Op: "rename", Old: from, New: to, Err: errCrossDevice}
	}
	src, err := os.Open(from)
	if err != nil {
		return "", err
	}
	defer src.Close()
	tmp, f, err := createTemp(dir, base, fi.Mode()&permBits)
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, src); err != nil {
		return "", err
	}
	if err := f.Chmod(fi.Mode() & permBits); err != nil {
		return "", err
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	ok = true
	// A move keeps the modification time, as mv does.
	_ = os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	return tmp, nil
}
