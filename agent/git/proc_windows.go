//go:build windows

package git

import (
	"os/exec"
	"strconv"
	"syscall"
)

// createNoWindow keeps git and its helpers off any console, so none of them
// can prompt there.
const createNoWindow = 0x08000000

// ownProcessGroup starts git in a new process group with no console window.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP | createNoWindow,
		HideWindow:    true,
	}
}

// killProcessGroup kills git and every process it started (taskkill /T walks
// the process tree), falling back to killing git alone.
func killProcessGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	kill := exec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(cmd.Process.Pid))
	kill.SysProcAttr = &syscall.SysProcAttr{CreationFlags: createNoWindow, HideWindow: true}
	if err := kill.Run(); err != nil {
		return cmd.Process.Kill()
	}
	return nil
}
