//go:build unix

package capture

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipeStateOf polls the read end with a zero timeout: POLLHUP once no writer
// is left, POLLIN while bytes are waiting.
func pipeStateOf(f *os.File) pipeState {
	rc, err := f.SyscallConn()
	if err != nil {
		return pipeUnknown
	}
	state := pipeUnknown
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		switch {
		case err != nil:
		case n == 0:
			state = pipeIdle
		case fds[0].Revents&(unix.POLLHUP|unix.POLLERR) != 0:
			state = pipeWritersGone
		case fds[0].Revents&unix.POLLIN != 0:
			state = pipeDataPending
		}
	})
	return state
}
