//go:build !windows

package service

import "context"

// RunManaged runs fn as the service body. Outside Windows the service
// managers (systemd, launchd) stop the agent with SIGTERM, which the caller
// handles, so this just calls fn(ctx). See run_windows.go for the SCM.
func RunManaged(ctx context.Context, stopCause, shutdownCause error, fn func(context.Context) error) error {
	return fn(ctx)
}
