package capture

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/windows"
)

var procPeekNamedPipe = windows.NewLazySystemDLL("kernel32.dll").NewProc("PeekNamedPipe")

// pipeStateOf asks PeekNamedPipe how many bytes wait in the pipe; a broken
// pipe means no writer is left.
func pipeStateOf(f *os.File) pipeState {
	rc, err := f.SyscallConn()
	if err != nil || procPeekNamedPipe.Find() != nil {
		return pipeUnknown
	}
	state := pipeUnknown
	_ = rc.Control(func(fd uintptr) {
		var avail uint32
		ok, _, callErr := procPeekNamedPipe.Call(fd, 0, 0, 0, uintptr(unsafe.Pointer(&avail)), 0)
		switch {
		case ok != 0 && avail > 0:
			state = pipeDataPending
		case ok != 0:
			state = pipeIdle
		case errors.Is(callErr, windows.ERROR_BROKEN_PIPE):
			state = pipeWritersGone
		}
	})
	return state
}
