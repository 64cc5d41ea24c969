//go:build !windows

package service

import (
	"context"
	"os"
)

// RunManaged runs fn as the service body. Outside Windows the service
// managers (systemd, launchd) stop the agent with SIGTERM, which the caller
// handles, so this just calls fn(ctx). See run_windows.go for the SCM.
func RunManaged(ctx context.Context, stopCause, shutdownCause error, fn func(context.Context) error) error {
	return fn(ctx)
}

// Managed reports whether this process runs as the background service:
// systemd sets INVOCATION_ID for every unit it starts, launchd sets
// XPC_SERVICE_NAME to the job label.
func Managed() bool {
	return os.Getenv("INVOCATION_ID") != "" || os.Getenv("XPC_SERVICE_NAME") == Label
}
