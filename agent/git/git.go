// Package git serves the agent's GitRequest op: every GitOp runs the
// machine's own git binary when one is installed (so the owner's credential
// helpers, ssh config, hooks, signing and includeIf all apply), and falls
// back to go-git for the local ops when none is.
package git

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// DefaultTimeout bounds one git command; GitRequest carries no timeout.
const DefaultTimeout = 5 * time.Minute

// DefaultMaxOutput bounds the bytes kept from each of stdout and stderr.
const DefaultMaxOutput = 64 << 20

// Options configures a Service. Zero values take the defaults.
type Options struct {
	// Root resolves GitRequest.cwd.
	Root workspace.Root
	// Timeout bounds one git command (default DefaultTimeout). On expiry the
	// command's whole process group is killed and Git returns a TIMEOUT error.
	Timeout time.Duration
	// Logger receives one line per op; nil discards.
	Logger *slog.Logger
	// GitPath is the git binary. Empty looks "git" up in PATH at each call;
	// a path that does not exist means git is not installed (go-git serves
	// the local ops).
	GitPath string
	// MaxOutput caps the bytes kept from each of stdout and stderr (default
	// DefaultMaxOutput); the rest is dropped and a note appended to stderr.
	MaxOutput int
}

// Service answers GitRequests.
type Service struct {
	root      workspace.Root
	timeout   time.Duration
	log       *slog.Logger
	gitPath   string
	maxOutput int
}

// New returns a Service with opts' defaults applied.
func New(opts Options) *Service {
	s := &Service{
		root:      opts.Root,
		timeout:   opts.Timeout,
		log:       opts.Logger,
		gitPath:   opts.GitPath,
		maxOutput: opts.MaxOutput,
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "git")
	if s.maxOutput <= 0 {
		s.maxOutput = DefaultMaxOutput
	}
	return s
}

// errNotDir is why a cwd that is a file cannot be used.
var errNotDir error = syscall.ENOTDIR

// subcommands maps each op to the git subcommand its args follow. RAW and
// UNSPECIFIED run the args alone.
var subcommands = map[agentpb.GitOp][]string{
	agentpb.GitOp_GIT_OP_STATUS:   {"status", "--porcelain=v2", "--branch"},
	agentpb.GitOp_GIT_OP_DIFF:     {"diff"},
	agentpb.GitOp_GIT_OP_LOG:      {"log"},
	agentpb.GitOp_GIT_OP_ADD:      {"add"},
	agentpb.GitOp_GIT_OP_COMMIT:   {"commit"},
	agentpb.GitOp_GIT_OP_BRANCH:   {"branch"},
	agentpb.GitOp_GIT_OP_CHECKOUT: {"checkout"},
	agentpb.GitOp_GIT_OP_PULL:     {"pull"},
	agentpb.GitOp_GIT_OP_PUSH:     {"push"},
	agentpb.GitOp_GIT_OP_RAW:      nil,
}

// opName is the op's lower-case name for logs and errors ("status", "raw").
func opName(op agentpb.GitOp) string {
	if sub := subcommands[op]; len(sub) > 0 {
		return sub[0]
	}
	return "raw"
}

// Git runs one GitRequest. A git that exits non-zero is a normal response
// carrying its exit code and stderr; errors are for a missing cwd, a spawn
// failure, a timeout, or an op go-git cannot serve when git is not installed.
func (s *Service) Git(ctx context.Context, req *agentpb.GitRequest) (resp *agentpb.GitResponse, err error) {
	start := time.Now()
	op := req.GetOp()
	if _, known := subcommands[op]; !known && op != agentpb.GitOp_GIT_OP_UNSPECIFIED {
		return nil, agenterr.Unsupported("git op %d", int32(op))
	}
	backend := "cli"
	defer func() {
		attrs := []any{"op", opName(op), "backend", backend, "duration", time.Since(start)}
		if err != nil {
			attrs = append(attrs, "err", err)
		} else {
			attrs = append(attrs, "exit", resp.GetExitCode())
		}
		s.log.Debug("git op", attrs...)
	}()

	dir, err := s.root.Resolve(req.GetCwd())
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, agenterr.FromIO("spawn git", err)
	} else if !fi.IsDir() {
		return nil, agenterr.FromIO("spawn git", &os.PathError{Op: "chdir", Path: dir, Err: errNotDir})
	}

	bin, err := s.lookGit()
	if err != nil {
		backend = "go-git"
		if cgroup.Requested(ctx) { // go-git runs inside the agent: no leaf can hold it
			return nil, cgroup.Unenforceable("git with a resource policy: git is not installed, and the built-in go-git runs inside the agent, where no per-op limit applies")
		}
		return s.goGit(ctx, op, dir, req.GetArgs())
	}
	return s.runCLI(ctx, bin, op, dir, req.GetArgs())
}

// lookGit finds the git binary, or fails when git is not installed.
func (s *Service) lookGit() (string, error) {
	if s.gitPath == "" {
		return exec.LookPath("git")
	}
	fi, err := os.Stat(s.gitPath)
	if err != nil {
		return "", err
	}
	if fi.IsDir() {
		return "", fmt.Errorf("%s is a directory", s.gitPath)
	}
	return s.gitPath, nil
}

// timeoutError is the TIMEOUT answer for a command killed at the deadline.
func (s *Service) timeoutError(op agentpb.GitOp) error {
	return &agenterr.Error{
		Code:      agentpb.ErrorCode_ERROR_CODE_TIMEOUT,
		Message:   fmt.Sprintf("timed out: git %s did not finish within %s and was stopped", opName(op), s.timeout),
		Retryable: true,
		Err:       agenterr.ErrTimeout,
	}
}

// ctxError maps the end of ctx onto the agent's error model: a deadline is a
// TIMEOUT, a cancellation stays context.Canceled.
func (s *Service) ctxError(op agentpb.GitOp, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return s.timeoutError(op)
	}
	return fmt.Errorf("git %s: %w", opName(op), err)
}
