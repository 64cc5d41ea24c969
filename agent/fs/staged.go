package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
)

// Staged is a file written in pieces (an op-stream chunked upload): the
// pieces land, at their offsets, in a temp file beside the target, and
// Commit renames it into place the way fs_write replaces a file (mode and
// owner kept, synced, symlinks written through). Until Commit the target is
// untouched; Abort removes the temp file.
type Staged struct {
	target   string
	tmp      string
	f        *os.File
	perm     iofs.FileMode
	existing iofs.FileInfo
	unsynced atomic.Int64 // bytes written since writeback was last started
}

// writebackEvery is how many staged bytes start an early writeback.
const writebackEvery = 8 << 20

// Stage prepares a staged write of path (resolved like every fs path). mode
// 0 keeps an existing file's mode (or the default for a new one).
func (s *Service) Stage(path string, createParents bool, mode uint32) (*Staged, error) {
	p, err := s.root.Resolve(path)
	if err != nil {
		return nil, fmt.Errorf("fs_write: %w", err)
	}
	if createParents {
		if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
			return nil, agenterr.FromIO("mkdir -p "+filepath.Dir(p), err)
		}
	}
	target, err := writeTarget(p)
	if err != nil {
		return nil, err
	}
	perm := defaultFileMode
	if mode != 0 {
		perm = fileMode(mode)
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		fi = nil
	case err != nil:
		return nil, agenterr.FromIO("stat "+target, err)
	case fi.IsDir():
		return nil, agenterr.FromIO("write "+target, &iofs.PathError{Op: "write", Path: target, Err: syscall.EISDIR})
	case specialKind(fi.Mode()) != "":
		return nil, specialFileError("fs_write", target, specialKind(fi.Mode()))
	case !fi.Mode().IsRegular():
		return nil, agenterr.Unsupported("fs_write %s: a chunked write replaces regular files only", target)
	default:
		if err := checkWritable(target); err != nil {
			return nil, agenterr.FromIO("open "+target, err)
		}
		if mode == 0 {
			perm = fi.Mode() & permBits
		}
	}
	tmp, f, err := createTemp(filepath.Dir(target), filepath.Base(target), perm)
	if err != nil {
		return nil, agenterr.FromIO("write "+target, err)
	}
	return &Staged{target: target, tmp: tmp, f: f, perm: perm, existing: fi}, nil
}

// Target is the path Commit replaces.
func (st *Staged) Target() string { return st.target }

// WriteAt writes one piece at its offset (pieces may come in any order,
// and a repeated piece rewrites the same bytes).
func (st *Staged) WriteAt(b []byte, off int64) error {
	if _, err := st.f.WriteAt(b, off); err != nil {
		return agenterr.FromIO("write "+st.target, err)
	}
	if st.unsynced.Add(int64(len(b))) >= writebackEvery {
		st.unsynced.Store(0)
		startWriteback(st.f)
	}
	return nil
}

// Commit truncates the staged file to size, syncs it and, if verify (run
// just before the rename, may be nil) passes, renames it over the target.
// On any failure the target is left as it was and the temp file removed.
func (st *Staged) Commit(ctx context.Context, size int64, verify func(target string) error) error {
	defer st.Abort()
	if err := st.f.Truncate(size); err != nil {
		return agenterr.FromIO("write "+st.target, err)
	}
	if st.existing != nil {
		preserveOwner(st.f, st.existing) // owner first: chown clears setuid/setgid
		if err := st.f.Chmod(st.perm); err != nil {
			return agenterr.FromIO("chmod "+st.target, err)
		}
	}
	if err := st.f.Sync(); err != nil {
		return agenterr.FromIO("flush "+st.target, err)
	}
	if verify != nil {
		if err := verify(st.target); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs_write %s: %w", st.target, err)
	}
	if err := os.Rename(st.tmp, st.target); err != nil {
		return agenterr.FromIO("write "+st.target, err)
	}
	st.tmp = ""
	syncDir(filepath.Dir(st.target))
	return nil
}

// Abort drops the staged file (a no-op after a successful Commit).
func (st *Staged) Abort() {
	_ = st.f.Close()
	if st.tmp != "" {
		_ = os.Remove(st.tmp)
		st.tmp = ""
	}
}

// OpenRegular opens path (resolved like every fs path) for reading a
// regular file as a stream (op-stream fs_read); anything else is refused
// with a typed error. It returns the file and its size.
func (s *Service) OpenRegular(path string) (*os.File, int64, error) {
	p, err := s.root.Resolve(path)
	if err != nil {
		return nil, 0, fmt.Errorf("fs_read: %w", err)
	}
	f, fi, err := openNoWait("fs_read", p, os.O_RDONLY, 0, "read "+p)
	if err != nil {
		return nil, 0, err
	}
	if fi.IsDir() {
		f.Close()
		return nil, 0, agenterr.FromIO("read "+p, &iofs.PathError{Op: "read", Path: p, Err: syscall.EISDIR})
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, agenterr.Unsupported("fs_read %s: op-stream reads regular files only; use fs_read for devices", p)
	}
	return f, fi.Size(), nil
}

// Hash writes the first size staged bytes to h (the content digest, taken
// before Commit).
func (st *Staged) Hash(h io.Writer, size int64) error {
	f, err := os.Open(st.tmp) // the staged file is open write-only
	if err != nil {
		return agenterr.FromIO("read "+st.tmp, err)
	}
	defer f.Close()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return agenterr.FromIO("read "+st.tmp, err)
	}
	return nil
}
