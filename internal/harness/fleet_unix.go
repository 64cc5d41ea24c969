//go:build unix

package harness

import (
	"fmt"
	"syscall"
)

// ensureFDLimit raises the soft open-files limit to the hard one (Go does
// this at start on Linux; this also covers other unixes and says so in the
// report) and fails when fewer than need descriptors are allowed.
func ensureFDLimit(need int) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("fleet: open-files limit: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, fmt.Errorf("fleet: raise the open-files limit to %d: %w", lim.Max, err)
		}
	}
	if lim.Cur < uint64(need) {
		return lim.Cur, fmt.Errorf("fleet: %d open files needed, the hard limit is %d (raise it: ulimit -Hn)", need, lim.Cur)
	}
	return lim.Cur, nil
}
