package capture

import (
	"os"

	"golang.org/x/sys/unix"
)

// growPipe asks for a pipe of StreamChunk or more (Linux allows up to
// fs.pipe-max-size, 1 MiB by default, unprivileged): a streaming reader
// then gets full-size chunks in one read, and a fast writer blocks less.
// Best effort; the default 64 KiB pipe works too.
func growPipe(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 4*StreamChunk) })
}
