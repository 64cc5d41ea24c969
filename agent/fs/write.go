package fs

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/opengeni/opengeni-agent/agent/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// defaultFileMode is the mode of a new file when the request gives none,
// subject to the umask like any created file.
const defaultFileMode iofs.FileMode = 0o644

// permBits are the bits a replaced file keeps.
const permBits = iofs.ModePerm | iofs.ModeSetuid | iofs.ModeSetgid | iofs.ModeSticky

// Write writes content to a file.
//
// Without append the file is replaced atomically: a temp file in the same
// directory is written, synced and renamed over the target, so readers see
// the old or the new content, never a mix. An existing file keeps its
// permission bits (and, where allowed, owner) unless mode is set; a symlink
// is written through, not replaced. A read-only file stays protected: EACCES,
// as an in-place write would get.
//
// With append the content is added at the end, creating the file if needed.
// mode (unix bits) applies to a file this call creates, subject to the umask.
func (s *Service) Write(_ context.Context, req *agentpb.FsWriteRequest) (*agentpb.FsWriteResponse, error) {
	p, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_write: %w", err)
	}
	if req.GetCreateParents() {
		dir := filepath.Dir(p)
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return nil, agenterr.FromIO("mkdir -p "+dir, err)
		}
	}
	perm := defaultFileMode
	if m := req.GetMode(); m != 0 {
		perm = fileMode(m)
	}
	content := req.GetContent()
	if req.GetAppend() {
		err = writeOpen(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm, content)
	} else {
		err = replace(p, content, perm, req.GetMode() != 0)
	}
	if err != nil {
		return nil, err
	}
	return &agentpb.FsWriteResponse{BytesWritten: uint64(len(content))}, nil
}

func replace(p string, content []byte, perm iofs.FileMode, modeSet bool) error {
	target, err := writeTarget(p)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, iofs.ErrNotExist):
		fi = nil
	case err != nil:
		return agenterr.FromIO("stat "+target, err)
	case fi.IsDir():
		return agenterr.FromIO("write "+target, &iofs.PathError{Op: "write", Path: target, Err: syscall.EISDIR})
	case fi.Mode()&(iofs.ModeNamedPipe|iofs.ModeSocket) != 0:
		return agenterr.Invalid("write %s: a named pipe or socket cannot be written as a file", target)
	case !fi.Mode().IsRegular():
		// A device: replacing it with a regular file would be wrong.
		return writeInPlace(target, content)
	default:
		if err := checkWritable(target); err != nil {
			return agenterr.FromIO("open "+target, err)
		}
		if !modeSet {
			perm = fi.Mode() & permBits
		}
	}
	err = replaceAtomic(target, content, perm, fi)
	if fi != nil && errors.Is(err, iofs.ErrPermission) {
		// The file is writable but its directory is not: no temp file can be
		// made there, so write in place.
		return writeInPlace(target, content)
	}
	return err
}

// replaceAtomic writes content to a temp file beside target and renames it
// over target. existing is target's lstat, nil when it does not exist.
func replaceAtomic(target string, content []byte, perm iofs.FileMode, existing iofs.FileInfo) error {
	dir := filepath.Dir(target)
	tmp, f, err := createTemp(dir, filepath.Base(target), perm)
	if err != nil {
		return agenterr.FromIO("write "+target, err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(content); err != nil {
		return agenterr.FromIO("write "+target, err)
	}
	if existing != nil {
		// Owner first: chown clears setuid/setgid bits.
		preserveOwner(f, existing)
		if err := f.Chmod(perm); err != nil {
			return agenterr.FromIO("chmod "+target, err)
		}
	}
	if err := f.Sync(); err != nil {
		return agenterr.FromIO("flush "+target, err)
	}
	if err := f.Close(); err != nil {
		return agenterr.FromIO("flush "+target, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		done = true
		return agenterr.FromIO("write "+target, err)
	}
	done = true
	syncDir(dir) // best effort: makes the rename itself durable
	return nil
}

// createTemp creates a new hidden file in dir with perm (subject to umask).
func createTemp(dir, base string, perm iofs.FileMode) (string, *os.File, error) {
	var err error
	for range 10 {
		name := tempName(dir, base)
		var f *os.File
		f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			return name, f, nil
		}
		if !errors.Is(err, iofs.ErrExist) {
			return "", nil, err
		}
	}
	return "", nil, err
}

// tempName is a hidden, unlikely name beside base in dir.
func tempName(dir, base string) string {
	return filepath.Join(dir, "."+base+".opengeni-"+strconv.FormatUint(rand.Uint64(), 36)+".tmp")
}

// writeInPlace truncates and rewrites p, keeping its inode (a device, or a
// file whose directory is not writable).
func writeInPlace(p string, content []byte) error {
	return writeOpen(p, os.O_WRONLY|os.O_TRUNC, 0, content)
}

// writeOpen opens p with flag (perm applies if it creates the file) and
// writes content: an append, or an in-place rewrite.
func writeOpen(p string, flag int, perm iofs.FileMode, content []byte) error {
	f, err := os.OpenFile(p, flag, perm)
	if err != nil {
		return agenterr.FromIO("open "+p, err)
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return agenterr.FromIO("write "+p, err)
	}
	return agenterr.FromIO("flush "+p, f.Close())
}

// writeTarget follows symlinks from p to the path a write lands on. A
// dangling link leads to the missing target, which the write creates, as a
// shell redirection would.
func writeTarget(p string) (string, error) {
	for range 40 { // the kernel's own symlink limit
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&iofs.ModeSymlink == 0 {
			return p, nil
		}
		dest, err := os.Readlink(p)
		if err != nil {
			return "", agenterr.FromIO("write "+p, err)
		}
		if !filepath.IsAbs(dest) {
			dest = filepath.Join(filepath.Dir(p), dest)
		}
		p = dest
	}
	return "", agenterr.FromIO("write "+p, &iofs.PathError{Op: "write", Path: p, Err: syscall.ELOOP})
}
