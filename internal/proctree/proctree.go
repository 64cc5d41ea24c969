package proctree

import (
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Options says how a tree is set up.
type Options struct {
	// KillOnDrop ends the tree if this process dies before Release, even
	// when it is SIGKILLed.
	KillOnDrop bool
	// Session, on unix, makes the command lead a new session (Setsid): no
	// controlling terminal, so nothing in the tree can prompt on /dev/tty
	// (the caller may add Setctty to give it a pseudo-terminal instead). On
	// Windows it starts the command in a new process group without a
	// console window.
	Session bool
}

// Tree is a command that leads its own process tree.
type Tree struct {
	cmd  *exec.Cmd
	opts Options
	plat platform

	waitOnce sync.Once
	done     chan struct{} // closed when Wait returned
}

// New sets cmd up to lead its own tree (keeping the SysProcAttr fields it
// already has). Call Start to start it; once started, call Release when
// the command is done.
func New(cmd *exec.Cmd, opts Options) *Tree {
	t := &Tree{cmd: cmd, opts: opts, done: make(chan struct{})}
	t.prepare()
	return t
}

// Start starts the command.
func (t *Tree) Start() error { return t.start() }

// Wait waits for the command (exec.Cmd.Wait) and marks the tree's root as
// exited for Stop.
func (t *Tree) Wait() error {
	err := t.cmd.Wait()
	t.waitOnce.Do(func() { close(t.done) })
	return err
}

// Kill ends every process in the tree at once. It reports os.ErrProcessDone
// when the tree was already gone.
func (t *Tree) Kill() error { return t.kill() }

// Signal sends sig to every process in the tree. Windows has no signals for
// a tree: SIGKILL is Kill, anything else fails with syscall.EWINDOWS.
func (t *Tree) Signal(sig syscall.Signal) error { return t.signal(sig) }

// Stop ends the tree with a grace period: SIGTERM to every process in it
// (on Windows, which has no such signal, it kills at once), then SIGKILL if
// the command has not exited within grace. It returns once the command
// exited, so Wait must be running in another goroutine.
func (t *Tree) Stop(grace time.Duration) error {
	if err := t.signal(syscall.SIGTERM); err == nil {
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-t.done:
			return nil
		case <-timer.C:
		}
	}
	err := t.kill()
	<-t.done
	return err
}

// Release ends kill-on-drop once the command is done: what it left running
// on purpose ("server &") outlives it. Safe to call more than once.
func (t *Tree) Release() { t.release() }
