//go:build unix

package fs

import (
	"os"
	"syscall"
)

func isRoot() bool { return os.Geteuid() == 0 }

// umask reads the process umask (tests do not run in parallel).
func umask() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}
