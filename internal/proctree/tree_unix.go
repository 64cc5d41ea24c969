//go:build unix

package proctree

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// platform is the guard's listing of the group, nil unless KillOnDrop.
type platform struct {
	guard *guarded
}

func (t *Tree) prepare() {
	if t.cmd.SysProcAttr == nil {
		t.cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	if t.opts.Session {
		t.cmd.SysProcAttr.Setsid = true // a new session is a new group too
	} else {
		t.cmd.SysProcAttr.Setpgid = true
		t.cmd.SysProcAttr.Pgid = 0
	}
}

func (t *Tree) start() error {
	if !t.opts.KillOnDrop {
		return t.cmd.Start()
	}
	g, err := startGuarded(t.cmd)
	t.plat.guard = g
	return err
}

// kill sends SIGKILL to the whole group: SIGTERM could be ignored.
func (t *Tree) kill() error { return t.signal(unix.SIGKILL) }

// signal signals the group the command leads.
func (t *Tree) signal(sig syscall.Signal) error {
	if t.cmd.Process == nil {
		return os.ErrProcessDone
	}
	err := unix.Kill(-t.cmd.Process.Pid, sig)
	if errors.Is(err, unix.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

func (t *Tree) release() {
	t.plat.guard.release()
	t.plat.guard = nil
}
