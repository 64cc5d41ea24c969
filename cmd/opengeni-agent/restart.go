package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/service"
	"github.com/opengeni/opengeni-agent/agent/update"
)

// exitRestartForUpdate is the exit status after a fleet update under a
// service manager (EX_TEMPFAIL): non-zero, so a manager that restarts only
// failures (Windows SCM recovery actions) restarts it too; systemd
// (Restart=always) and launchd (KeepAlive) restart on any exit.
const exitRestartForUpdate = 75

// updateRestart wires a fleet update's restart into `run`: Restart cancels
// the run context with the update's StopReason (every connection announces
// GoingOffline UPDATE and drains), and once everything stopped finish
// restarts the process onto the new binary.
type updateRestart struct {
	cancel     context.CancelCauseFunc
	requested  atomic.Bool
	rolledBack bool // the boot probation rolled this binary back at start
	su         *agent.SelfUpdate
}

// newUpdateRestart wraps ctx so a fleet update can end it. The SelfUpdate
// is nil (the op then answers UNSUPPORTED) when the binary cannot be read.
func newUpdateRestart(ctx context.Context, logger *slog.Logger) (context.Context, *updateRestart) {
	ctx, cancel := context.WithCancelCause(ctx)
	r := &updateRestart{cancel: cancel}
	su, err := agent.NewSelfUpdate(agent.SelfUpdateOptions{
		BaseURL: envOr("OPENGENI_INSTALL_BASE_URL", update.DefaultBaseURL),
		Restart: func(why agent.StopReason) {
			if ctx.Err() != nil {
				// Already stopping (the user or the host asked first): the
				// new binary is installed and runs at the next start; no
				// restart behind the user's back.
				return
			}
			r.requested.Store(true)
			if service.Managed() {
				reconcileService(ctx, r.su.Executable(), logger)
			}
			cancel(why)
		},
		Logger: logger,
	})
	switch {
	case errors.Is(err, agent.ErrUpdateRolledBack):
		r.rolledBack = true
	case err != nil:
		logger.Warn("fleet updates disabled", "err", err)
	}
	r.su = su
	return ctx, r
}

// rolledBackAtStart restarts the process onto the previous binary when the
// boot probation just rolled this updated one back (it never came online):
// it reports the exit status and true, or false to go on serving.
func (r *updateRestart) rolledBackAtStart(logger *slog.Logger) (int, bool) {
	if !r.rolledBack {
		return 0, false
	}
	r.requested.Store(true)
	if service.Managed() {
		return r.finish(0, errRestartForUpdate, logger), true
	}
	exe, err := os.Executable()
	if err == nil {
		if rp, err := filepath.EvalSymlinks(exe); err == nil {
			exe = rp
		}
		logger.Info("re-executing the previous binary", "path", exe)
		err = reexec(exe, os.Args, os.Environ())
	}
	logger.Error("could not start the previous binary; start the agent again", "err", err)
	return 1, true
}

// reconcileService has the new binary bring the installed service
// definition up to what it renders (hidden `service-reconcile`), before
// this process exits for the manager to start it. A failure is logged: the
// new binary passed its health gate and the old definition still runs it.
func reconcileService(ctx context.Context, exe string, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, exe, "service-reconcile").CombinedOutput()
	if err != nil {
		logger.Warn("the updated binary could not reconcile the service definition", "err", err, "output", strings.TrimSpace(string(out)))
		return
	}
	logger.Info("service definition reconciled by the updated binary", "output", strings.TrimSpace(string(out)))
}

// cmdServiceReconcile is the hidden `service-reconcile`: rewrite the
// installed service definitions (user and system scope) this binary
// renders differently; install, start and restart nothing.
func cmdServiceReconcile(stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := 0
	for _, scope := range []service.Scope{service.User, service.System} {
		changed, err := service.Reconcile(ctx, service.Options{Scope: scope, Warn: func(string) {}})
		switch {
		case err != nil:
			fmt.Fprintf(stderr, "%s scope: %v\n", scope, err)
			code = 1
		case changed:
			fmt.Fprintf(stdout, "%s scope: service definition rewritten\n", scope)
		}
	}
	return code
}

// errRestartForUpdate ends a service's run body after a fleet update: the
// Windows SCM must see a failure exit for its recovery actions to start the
// new binary (a clean exit stays stopped).
var errRestartForUpdate = errors.New("restarting onto an updated binary")

// body wraps a run body for service.RunManaged.
func (r *updateRestart) body(fn func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		err := fn(ctx)
		if err == nil && r.requested.Load() && service.Managed() {
			return errRestartForUpdate
		}
		return err
	}
}

// finish is run's exit status once the body returned err. After a fleet
// update it restarts the process: under a service manager it exits
// (exitRestartForUpdate) so the manager starts the new binary from its
// service definition; in the foreground nothing else would bring the agent
// back, so it re-executes the new binary in place (same pid, terminal and
// arguments; unix) or starts it and exits (Windows).
func (r *updateRestart) finish(code int, err error, logger *slog.Logger) int {
	r.cancel(nil)
	if errors.Is(err, errRestartForUpdate) {
		logger.Info("exiting for the service manager to start the updated binary", "exit_code", exitRestartForUpdate)
		return exitRestartForUpdate
	}
	if err != nil {
		logger.Error("agent exited with an error", "err", err)
		return 1
	}
	if code != 0 || !r.requested.Load() || r.su == nil {
		return code
	}
	exe := r.su.Executable()
	logger.Info("re-executing the updated binary", "path", exe)
	if err := reexec(exe, os.Args, os.Environ()); err != nil {
		logger.Error("could not start the updated binary; start the agent again", "err", err)
		return 1
	}
	return 0
}
