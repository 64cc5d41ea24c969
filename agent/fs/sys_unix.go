//go:build unix

package fs

import (
	iofs "io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var (
	errExist       error = syscall.EEXIST
	errCrossDevice error = syscall.EXDEV
)

// rawMode is st_mode with the file-type bits, as the wire carries it.
func rawMode(fi iofs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint32(st.Mode)
	}
	return 0
}

// preserveOwner gives the replacement file the replaced file's owner, so an
// agent running as root does not take over a user's file. Best effort: only
// root may give a file away.
func preserveOwner(f *os.File, existing iofs.FileInfo) {
	if st, ok := existing.Sys().(*syscall.Stat_t); ok {
		_ = f.Chown(int(st.Uid), int(st.Gid))
	}
}

// syncDir flushes a directory, making a rename in it durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// checkWritable refuses to replace a file the caller could not open for
// writing: a rename would bypass the file's own permission bits.
func checkWritable(p string) error {
	if err := unix.Access(p, unix.W_OK); err != nil {
		return &iofs.PathError{Op: "open", Path: p, Err: err}
	}
	return nil
}

// renameReplace is rename(2): unlike os.Rename it may replace an empty
// directory, as POSIX allows.
func renameReplace(from, to string) error {
	if err := unix.Rename(from, to); err != nil {
		return &os.LinkError{Op: "rename", Old: from, New: to, Err: err}
	}
	return nil
}
