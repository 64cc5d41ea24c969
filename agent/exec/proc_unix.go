//go:build unix

package exec

import (
	"errors"
	"os"
	osexec "os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// procTree is the command and everything it starts: on unix, a process
// group led by the command.
type procTree struct{}

func newProcTree(cmd *osexec.Cmd) *procTree {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// An own group, so a timeout reaches grandchildren too.
	cmd.SysProcAttr.Setpgid = true
	return &procTree{}
}

func (*procTree) started(*os.Process) {}

func (*procTree) release() {}

// kill sends SIGKILL to the whole group: SIGTERM could be ignored, and a
// timed-out command has had its chance.
func (*procTree) kill(p *os.Process) error {
	err := unix.Kill(-p.Pid, unix.SIGKILL)
	if errors.Is(err, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
