//go:build unix

package exec

import (
	"errors"
	"os"
	osexec "os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/killdrop"
)

// procTree is the command and everything it starts: on unix, a process
// group led by the command, which dies with the agent too (killdrop).
type procTree struct {
	group *killdrop.Group
}

func newProcTree(cmd *osexec.Cmd) *procTree {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// An own group, so a timeout reaches grandchildren too.
	cmd.SysProcAttr.Setpgid = true
	return &procTree{}
}

// start starts the command and guards its group against the agent's death
// (kill-on-drop) until release.
func (t *procTree) start(cmd *osexec.Cmd) error {
	g, err := killdrop.Start(cmd)
	t.group = g
	return err
}

// release ends the guard once the command is done: what it left running on
// purpose ("server &") outlives the exec, as it always did.
func (t *procTree) release() { t.group.Release() }

// kill sends SIGKILL to the whole group: SIGTERM could be ignored, and a
// timed-out command has had its chance.
func (*procTree) kill(p *os.Process) error {
	err := unix.Kill(-p.Pid, unix.SIGKILL)
	if errors.Is(err, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}
