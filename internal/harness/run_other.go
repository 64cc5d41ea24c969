//go:build !linux

package harness

import (
	"context"
	"errors"
)

// Run needs Linux: it reads /proc for memory, descriptors and leftover
// processes, and freezes the nats-server with SIGSTOP.
func Run(context.Context, Config) (*Report, error) {
	return nil, errors.New("the harness runs on linux only (it measures through /proc)")
}
