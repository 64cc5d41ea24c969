//go:build !windows

package git

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts git in a new session: its own process group (so a
// timeout kills git and every helper it spawned) and no controlling
// terminal (so nothing it runs, ssh included, can open /dev/tty to prompt).
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
}

// killProcessGroup kills the whole process group led by cmd's process.
func killProcessGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return cmd.Process.Kill()
	}
	return nil
}
