//go:build unix

package fs

import (
	"io"
	iofs "io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var (
	errExist       error = syscall.EEXIST
	errCrossDevice error = syscall.EXDEV
	errBusy        error = syscall.EBUSY
	errReadOnlyFS  error = syscall.EROFS
)

// oNonBlock makes opening a FIFO or a device return at once.
const oNonBlock = unix.O_NONBLOCK

// nowReader reads a device without waiting: straight read(2) calls that are
// never parked on the poller, EAGAIN (nothing to read now) ending the
// stream.
type nowReader struct{ f *os.File }

func (r nowReader) Read(p []byte) (int, error) {
	rc, err := r.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, rerr = ignoringEINTR(func() (int, error) { return unix.Read(int(fd), p) })
		return true
	}); err != nil {
		return 0, err
	}
	switch {
	case rerr == unix.EAGAIN:
		return 0, io.EOF
	case rerr != nil:
		return 0, &iofs.PathError{Op: "read", Path: r.f.Name(), Err: rerr}
	case n == 0 && len(p) > 0:
		return 0, io.EOF
	}
	return n, nil
}

// writeNow writes p to a device without waiting: a device that takes no
// more bytes now fails with EAGAIN instead of blocking the op.
func writeNow(f *os.File, p []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(p) > 0 {
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = ignoringEINTR(func() (int, error) { return unix.Write(int(fd), p) })
			return true
		}); err != nil {
			return err
		}
		if werr != nil {
			return &iofs.PathError{Op: "write", Path: f.Name(), Err: werr}
		}
		p = p[n:]
	}
	return nil
}

func ignoringEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}

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
