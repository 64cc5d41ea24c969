//go:build !windows

package service

import "context"

// queryTask needs the Windows Task Scheduler.
func queryTask(context.Context, string) (bool, int, error) { return false, 0, ErrUnsupported }
