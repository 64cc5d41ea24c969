//go:build !windows

package service

import "context"

// scm is the Windows service manager; elsewhere it only renders.
type scm struct{}

func (scm) install(context.Context, Options, Definition) (Result, error) {
	return Result{}, ErrUnsupported
}
func (scm) uninstall(context.Context, Options) error       { return ErrUnsupported }
func (scm) start(context.Context, Options) error           { return ErrUnsupported }
func (scm) stop(context.Context, Options) error            { return ErrUnsupported }
func (scm) restart(context.Context, Options) error         { return ErrUnsupported }
func (scm) status(context.Context, Options) (State, error) { return State{}, ErrUnsupported }
