//go:build !windows

package main

import "syscall"

// reexec replaces this process with exe (it returns only on failure).
// Every file Go opened is close-on-exec, so the instance locks and NATS
// sockets are gone and the new image starts clean.
func reexec(exe string, args, env []string) error {
	return syscall.Exec(exe, args, env)
}
