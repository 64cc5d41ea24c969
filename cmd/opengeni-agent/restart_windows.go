//go:build windows

package main

import (
	"os"
	"os/exec"
)

// reexec starts exe with the same arguments, environment and console and
// returns; Windows has no exec, so the caller exits after it.
func reexec(exe string, args, env []string) error {
	cmd := exec.Command(exe, args[1:]...)
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Start()
}
