//go:build windows

package service

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	ks "github.com/kardianos/service"
)

// RunManaged runs fn as the service body. Under the Windows service manager
// it speaks the SCM protocol through kardianos/service: it reports running,
// and a stop or a shutdown request cancels fn's context with stopCause or
// shutdownCause (so the agent says GoingOffline USER_STOP or HOST_SHUTDOWN)
// and waits up to 40 s for fn to drain. When fn fails on its own the
// process exits 1, which triggers the service's recovery actions. Run from a
// console or a scheduled task, it just calls fn(ctx).
func RunManaged(ctx context.Context, stopCause, shutdownCause error, fn func(context.Context) error) error {
	if ks.Interactive() {
		return fn(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	p := &program{ctx: ctx, cancel: cancel, fn: fn, stopCause: stopCause, shutdownCause: shutdownCause, done: make(chan struct{})}
	s, err := ks.New(p, &ks.Config{Name: WindowsName, DisplayName: DisplayName, Description: Description})
	if err != nil {
		return err
	}
	if err := s.Run(); err != nil {
		return err
	}
	return p.err
}

type program struct {
	ctx                      context.Context
	cancel                   context.CancelCauseFunc
	fn                       func(context.Context) error
	stopCause, shutdownCause error
	once                     sync.Once
	stopping                 atomic.Bool
	done                     chan struct{}
	err                      error
}

func (p *program) Start(ks.Service) error {
	go func() {
		defer close(p.done)
		p.err = p.fn(p.ctx)
		if !p.stopping.Load() {
			// Not asked to stop: the SCM must see the process end so the
			// recovery actions restart it.
			if p.err != nil {
				os.Exit(1)
			}
			os.Exit(0)
		}
	}()
	return nil
}

func (p *program) halt(cause error) error {
	p.stopping.Store(true)
	p.once.Do(func() { p.cancel(cause) })
	select {
	case <-p.done:
	case <-time.After(40 * time.Second):
	}
	return nil
}

func (p *program) Stop(ks.Service) error     { return p.halt(p.stopCause) }
func (p *program) Shutdown(ks.Service) error { return p.halt(p.shutdownCause) }

// Managed reports whether this process runs under the service manager.
func Managed() bool { return !ks.Interactive() }
