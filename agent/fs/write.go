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

	"github.com/opengeni/opengeni-agent/internal/agenterr"
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
// as an in-place write would get. An existing file that cannot be replaced
// where it is (its directory takes no temp file, as under /proc or in a
// read-only directory, or the rename is refused, as for a bind mount) is
// rewritten in place instead; a device always is, without waiting.
//
// With append the content is added at the end, creating the file if needed.
// mode (unix bits) applies to a file this call creates, subject to the umask.
//
// A FIFO or a socket is refused (UNSUPPORTED), never waited on. A deadline
// that passed before the write began, or before a replacement is renamed
// into place, leaves the file as it was (TIMEOUT).
func (s *Service) Write(ctx context.Context, req *agentpb.FsWriteRequest) (*agentpb.FsWriteResponse, error) {
	p, err := s.root.Resolve(req.GetPath())
	if err != nil {
		return nil, fmt.Errorf("fs_write: %w", err)
	}
	if err := ctx.Err(); err != nil { // the deadline passed while queued for a slot
		return nil, fmt.Errorf("fs_write %s: %w", p, err)
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
		err = replace(ctx, p, content, perm, req.GetMode() != 0)
	}
	if err != nil {
		return nil, err
	}
	return &agentpb.FsWriteResponse{BytesWritten: uint64(len(content))}, nil
}

func replace(ctx context.Context, p string, content []byte, perm iofs.FileMode, modeSet bool) error {
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
	case specialKind(fi.Mode()) != "":
		return specialFileError("fs_write", target, specialKind(fi.Mode()))
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
	err = replaceAtomic(ctx, target, content, perm, fi)
	if errors.Is(err, errNoReplace) {
		// The file is writable but cannot be replaced: its directory takes
		// no temp file (read-only, procfs) or the rename is refused (a bind
		// mount). Write in place; its error, if any, is the answer.
		return writeInPlace(target, content)
	}
	return err
}

// errNoReplace marks a replace refused for where the file is, not for what
// it is (see noReplace).
var errNoReplace = errors.New("file cannot be replaced atomically")

// noReplace reports whether err (creating the temp file or renaming it)
// says the directory cannot take a replacement, so writing in place should
// be tried. Space errors are not among them: rewriting in place could then
// leave the file truncated.
func noReplace(err error) bool {
	return errors.Is(err, iofs.ErrPermission) || errors.Is(err, iofs.ErrNotExist) ||
		errors.Is(err, errReadOnlyFS) || errors.Is(err, errBusy)
}

// replaceError wraps a temp-file or rename failure, marked errNoReplace
// when target exists and writing it in place may succeed.
func replaceError(target string, err error, existing iofs.FileInfo) error {
	err = agenterr.FromIO("write "+target, err)
	if existing != nil && noReplace(err) {
		return fmt.Errorf("%w: %w", errNoReplace, err)
	}
	return err
}

// replaceAtomic writes content to a temp file beside target and renames it
// over target. existing is target's lstat, nil when it does not exist. A
// deadline that passes before the rename leaves target untouched.
func replaceAtomic(ctx context.Context, target string, content []byte, perm iofs.FileMode, existing iofs.FileInfo) error {
	dir := filepath.Dir(target)
	tmp, f, err := createTemp(dir, filepath.Base(target), perm)
	if err != nil {
		return replaceError(target, err, existing)
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
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fs_write %s: %w", target, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		os.Remove(tmp)
		done = true
		return replaceError(target, err, existing)
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
// writes content: an append, or an in-place rewrite. A device is written
// without waiting; a FIFO or a socket is refused (UNSUPPORTED).
func writeOpen(p string, flag int, perm iofs.FileMode, content []byte) error {
	f, fi, err := openNoWait("fs_write", p, flag, perm, "open "+p)
	if err != nil {
		return err
	}
	if isDevice(fi.Mode()) {
		err = writeNow(f, content)
	} else {
		_, err = f.Write(content)
	}
	if err != nil {
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
