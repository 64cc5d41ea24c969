// Package exec runs one command for an ExecRequest: argv or shell, in a
// resolved working directory, with a deadline that kills the whole process
// tree and output capped to what the reply can carry.
package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/capture"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/envmerge"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	"github.com/opengeni/opengeni-agent/internal/proctree"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Defaults applied by New.
const (
	DefaultTimeout = 10 * time.Minute
	MaxTimeout     = time.Hour
	// PipeGrace is how long Exec keeps reading a stdout/stderr that stays
	// open after the command exited once nothing more arrives: a background
	// child ("server &") may hold it open forever, and its output is not the
	// command's. Bytes already written are always read first.
	PipeGrace = 200 * time.Millisecond
)

// errTimedOut is the cause of the per-command deadline, to tell it apart from
// the caller's context ending.
var errTimedOut = errors.New("exec: command timed out")

// Options configures a Service. Zero values get defaults in New.
type Options struct {
	// Root resolves the request cwd.
	Root workspace.Root
	// DefaultTimeout applies when a request has timeout_ms 0 (default 10 min).
	DefaultTimeout time.Duration
	// MaxTimeout caps every request's timeout (default 1 h).
	MaxTimeout time.Duration
	// Env is the base environment of every command; nil means os.Environ.
	Env func() []string
	// Logger receives noteworthy events (timeouts, truncation); nil means
	// slog.Default().
	Logger *slog.Logger
	// PipeGrace is how long output a background process holds open may stay
	// silent after the command exited before reading stops (default
	// PipeGrace).
	PipeGrace time.Duration
}

// Service serves exec requests. It is safe for concurrent use.
type Service struct {
	root           workspace.Root
	defaultTimeout time.Duration
	maxTimeout     time.Duration
	env            func() []string
	log            *slog.Logger
	pipeGrace      time.Duration
}

// New returns a Service with defaults applied to opts.
func New(opts Options) *Service {
	s := &Service{
		root:           opts.Root,
		defaultTimeout: opts.DefaultTimeout,
		maxTimeout:     opts.MaxTimeout,
		env:            opts.Env,
		log:            opts.Logger,
		pipeGrace:      opts.PipeGrace,
	}
	if s.pipeGrace <= 0 {
		s.pipeGrace = PipeGrace
	}
	if s.defaultTimeout <= 0 {
		s.defaultTimeout = DefaultTimeout
	}
	if s.maxTimeout <= 0 {
		s.maxTimeout = MaxTimeout
	}
	if s.env == nil {
		s.env = os.Environ
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("component", "exec")
	return s
}

// command builds req's command (argv or the machine's shell) in its
// resolved working directory, with the merged environment and stdin; ctx's
// end cancels it. It returns the program for messages and the cwd.
func (s *Service) command(ctx context.Context, req *agentpb.ExecRequest) (cmd *osexec.Cmd, argv0, cwd string, err error) {
	if len(req.GetCommand()) == 0 || (!req.GetShell() && req.GetCommand()[0] == "") {
		return nil, "", "", agenterr.Invalid("exec: empty command")
	}
	if cwd, err = s.root.Resolve(req.GetCwd()); err != nil {
		return nil, "", "", fmt.Errorf("exec cwd: %w", err)
	}
	env, err := s.environ(req.GetEnv())
	if err != nil {
		return nil, "", "", err
	}
	if req.GetShell() {
		sh := shellCommand(env, strings.Join(req.GetCommand(), " "))
		argv0 = sh.path
		cmd = osexec.CommandContext(ctx, sh.path)
		cmd.Args = sh.args
		setCmdLine(cmd, sh.cmdLine)
	} else {
		argv0 = req.GetCommand()[0]
		path, err := lookPath(argv0, cwd, env)
		if err != nil {
			return nil, "", "", agenterr.FromIO("spawn "+argv0, err)
		}
		cmd = osexec.CommandContext(ctx, path)
		cmd.Args = append([]string(nil), req.GetCommand()...)
	}
	cmd.Dir = cwd
	cmd.Env = env
	if len(req.GetStdin()) > 0 {
		cmd.Stdin = bytes.NewReader(req.GetStdin())
	} // else nil: the child reads EOF at once from the null device.
	return cmd, argv0, cwd, nil
}

// Exec runs req.Command and reports how it ended. A non-zero exit, a signal
// and a timeout are results, not errors; errors are for commands that could
// not start (NOT_FOUND for a missing program or cwd) and for the caller's
// context being cancelled.
func (s *Service) Exec(ctx context.Context, req *agentpb.ExecRequest) (*agentpb.ExecResponse, error) {
	budget := opctx.BoundedPayloadBudget(ctx)
	timeout := s.timeout(req.GetTimeoutMs())
	runCtx, cancel := context.WithTimeoutCause(ctx, timeout, errTimedOut)
	defer cancel()

	cmd, argv0, cwd, err := s.command(runCtx, req)
	if err != nil {
		return nil, err
	}

	// Each stream may keep up to the whole budget; Fit shares it out at the
	// end, when both lengths are known.
	limit := max(budget-responseOverhead-cgroup.NoteRoom(ctx), 0)
	pipes, err := capture.Attach(cmd, limit)
	if err != nil {
		return nil, agenterr.FromIO("spawn "+argv0, err)
	}

	var killed atomic.Bool
	tree := newTree(cmd, &killed)
	defer tree.Release()
	// Bounds only the stdin copy (a background child may hold stdin unread)
	// and a child that outlives its kill; the output pipes are ours.
	cmd.WaitDelay = s.pipeGrace

	leaf := cgroup.Place(ctx, cmd) // the op's resource policy: its own cgroup leaf (else Start fails)
	defer leaf.Close()

	start := time.Now()
	err = tree.Start()
	pipes.Started()
	if err != nil {
		pipes.Drain(ctx, 0)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("exec %s: %w", argv0, context.Cause(ctx))
		}
		// A missing cwd fails the spawn with ENOENT too; name the real culprit.
		if _, serr := os.Stat(cwd); serr != nil {
			return nil, agenterr.FromIO("spawn "+argv0+": cwd "+cwd, serr)
		}
		return nil, agenterr.FromIO("spawn "+argv0, err)
	}
	waitErr := tree.Wait()
	// Everything the command wrote before it exited is read; only a stream a
	// background process keeps open (and silent) is cut, bounded by the
	// command's deadline.
	pipes.Drain(runCtx, s.pipeGrace)
	elapsed := time.Since(start)
	contained := leaf.Close() // after the command: what it left running ends with the op

	if cmd.ProcessState == nil {
		return nil, agenterr.FromIO("exec wait", waitErr)
	}
	timedOut := killed.Load() && context.Cause(runCtx) == errTimedOut
	if killed.Load() && !timedOut {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The caller's deadline is a timeout too; the output so far is
			// worth returning.
			timedOut = true
		} else {
			return nil, fmt.Errorf("exec %s: %w", argv0, context.Cause(ctx))
		}
	}
	if (pipes.Stdout.Cut() || pipes.Stderr.Cut()) && !killed.Load() {
		s.log.Info("command exited but a background process kept its output open; stopped reading",
			"program", filepath.Base(argv0), "stdout_cut", pipes.Stdout.Cut(), "stderr_cut", pipes.Stderr.Cut())
	}

	resp := &agentpb.ExecResponse{
		ExitCode:   int32(cmd.ProcessState.ExitCode()), // -1 when killed by a signal
		TimedOut:   timedOut,
		DurationMs: uint64(elapsed.Milliseconds()),
	}
	if timedOut {
		resp.ExitCode = -1
		s.log.Warn("command timed out; killed its process tree",
			"program", filepath.Base(argv0), "timeout", timeout, "pid", cmd.Process.Pid)
	}
	var truncated bool
	resp.Stdout, resp.Stderr, truncated = capture.Fit(pipes.Stdout, pipes.Stderr, limit)
	resp.Stderr = append(resp.Stderr, contained.Note()...) // why it was killed, when memory.max did it
	if truncated {
		s.log.Info("command output not carried whole",
			"program", filepath.Base(argv0), "stdout_bytes", pipes.Stdout.Total(), "stderr_bytes", pipes.Stderr.Total(), "budget", budget)
	}
	return resp, nil
}

// newTree makes cmd lead its own process tree, killed whole when cmd's
// context ends (killed records that it was), so a timeout reaches
// grandchildren too. The tree dies with the agent (kill-on-drop) until
// Release, once the command is done: what it left running on purpose
// ("server &") outlives the exec, as it always did.
func newTree(cmd *osexec.Cmd, killed *atomic.Bool) *proctree.Tree {
	tree := proctree.New(cmd, proctree.Options{KillOnDrop: true})
	cmd.Cancel = func() error {
		// SIGKILL, not SIGTERM: a timed-out command has had its chance.
		err := tree.Kill()
		killed.Store(err == nil)
		return err
	}
	return tree
}

// timeout turns the request's timeout_ms into the deadline actually used.
func (s *Service) timeout(ms uint32) time.Duration {
	d := time.Duration(ms) * time.Millisecond
	if d == 0 {
		d = s.defaultTimeout
	}
	return min(d, s.maxTimeout)
}

// environ is the agent environment with the request's entries overriding.
func (s *Service) environ(over map[string]string) ([]string, error) {
	env, err := envmerge.Merge(s.env(), over)
	if err != nil {
		return nil, agenterr.Invalid("exec: %v", err)
	}
	return env, nil
}

// lookPath finds a program like os/exec does, but in the command's own PATH
// (a request may override it), and reports a miss as fs.ErrNotExist so it
// maps to NOT_FOUND.
func lookPath(name, cwd string, env []string) (string, error) {
	path, err := lookPathIn(name, cwd, env)
	if errors.Is(err, osexec.ErrNotFound) {
		return "", notFound{err}
	}
	return path, err
}

// notFound makes os/exec's "executable file not found" match fs.ErrNotExist.
type notFound struct{ error }

func (e notFound) Unwrap() error        { return e.error }
func (e notFound) Is(target error) bool { return target == fs.ErrNotExist }
