package proctree

import (
	osexec "os/exec"
	"runtime"
	"sync"
	"syscall"
)

// spawnReq asks the spawner thread to start a command.
type spawnReq struct {
	cmd  *osexec.Cmd
	done chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

// startCmd starts cmd with Pdeathsig SIGKILL from one OS thread that is
// locked and never exits, so the signal comes only when the process dies.
// Forks are serialised by syscall.ForkLock anyway; one thread costs no
// throughput.
func startCmd(cmd *osexec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go spawner()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	req := spawnReq{cmd: cmd, done: make(chan error, 1)}
	spawnCh <- req
	return <-req.done
}

func spawner() {
	// Never unlocked: the goroutine never returns, so the thread lives as
	// long as the process.
	runtime.LockOSThread()
	for req := range spawnCh {
		req.done <- req.cmd.Start()
	}
}
