package git

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/agent/agenterr"
	"github.com/opengeni/opengeni-agent/agent/opctx"
	"github.com/opengeni/opengeni-agent/internal/capture"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// waitDelay is how long git's output may stay silent while something git
// left behind holds it open, and how long Wait waits for a killed process
// group to go.
const waitDelay = 2 * time.Second

// responseOverhead bounds what GitResponse needs beyond stdout, stderr and
// status: exit_code and the fields' tags and lengths.
const responseOverhead = 64

// outputLimit is how many bytes of stdout and stderr together fit the reply.
// STATUS also carries the parsed status, which takes at most 2.5 times the
// porcelain listing's bytes (a one-letter untracked path: "? a\n" is 4
// bytes, its entry 10): a quarter of the budget for the output.
func (s *Service) outputLimit(ctx context.Context, op agentpb.GitOp) int {
	limit := max(opctx.BoundedPayloadBudget(ctx)-responseOverhead, 0)
	if op == agentpb.GitOp_GIT_OP_STATUS {
		limit /= 4
	}
	return limit
}

// batchSSH is the ssh command used when the owner configured none: it fails
// instead of asking for a password or a host-key confirmation.
const batchSSH = "ssh -oBatchMode=yes"

// runCLI runs the git binary for op with args verbatim, in dir, with no stdin
// and no way to prompt, killing its process group at the timeout.
func (s *Service) runCLI(ctx context.Context, bin string, op agentpb.GitOp, dir string, args []string) (*agentpb.GitResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	argv := append(append([]string(nil), subcommands[op]...), args...)
	cmd := exec.CommandContext(ctx, bin, argv...)
	cmd.Dir = dir
	cmd.Env = s.env(ctx, bin, op, dir)
	limit := max(s.outputLimit(ctx, op)-cgroup.NoteRoom(ctx), 0)
	pipes, err := capture.Attach(cmd, min(limit, s.maxOutput))
	if err != nil {
		return nil, agenterr.FromIO("spawn git", err)
	}
	ownProcessGroup(cmd)
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
	cmd.WaitDelay = waitDelay
	leaf := cgroup.Place(ctx, cmd) // the op's resource policy: its own cgroup leaf (else Start fails)
	defer leaf.Close()

	err = cmd.Start()
	pipes.Started()
	if err != nil {
		pipes.Drain(ctx, 0)
		if ctx.Err() != nil {
			return nil, s.ctxError(op, ctx.Err())
		}
		return nil, agenterr.FromIO("spawn git", err)
	}
	err = cmd.Wait()
	// A helper git left behind (an ssh ControlMaster, say) may hold the
	// output open; what git itself wrote is always read.
	pipes.Drain(ctx, waitDelay)
	contained := leaf.Close() // after git: what it left running ends with the op
	if err != nil && ctx.Err() != nil {
		return nil, s.ctxError(op, ctx.Err())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) {
		return nil, agenterr.FromIO("exec wait", err)
	}
	resp := &agentpb.GitResponse{
		ExitCode: int32(cmd.ProcessState.ExitCode()), // -1 when killed by a signal
	}
	var truncated bool
	resp.Stdout, resp.Stderr, truncated = capture.Fit(pipes.Stdout, pipes.Stderr, limit)
	resp.Stderr = append(resp.Stderr, contained.Note()...) // why it was killed, when memory.max did it
	if truncated {
		s.log.Info("git output not carried whole", "op", opName(op),
			"stdout_bytes", pipes.Stdout.Total(), "stderr_bytes", pipes.Stderr.Total(), "budget", limit)
	}
	// A cut porcelain listing would parse into a wrong status: none then.
	if op == agentpb.GitOp_GIT_OP_STATUS && resp.ExitCode == 0 && !truncated {
		resp.Status = parsePorcelainV2(resp.Stdout)
	}
	return resp, nil
}

// env is the agent's environment made non-interactive: git never prompts on
// a terminal or through an askpass helper, Git Credential Manager never opens
// a window, and ssh runs in batch mode unless the owner configured their own.
func (s *Service) env(ctx context.Context, bin string, op agentpb.GitOp, dir string) []string {
	env := os.Environ()
	env = setEnv(env, "GIT_TERMINAL_PROMPT", "0")
	env = setEnv(env, "GIT_ASKPASS", "") // set but empty: git skips core.askPass and SSH_ASKPASS
	env = setEnv(env, "SSH_ASKPASS", "")
	env = setEnv(env, "SSH_ASKPASS_REQUIRE", "never")
	env = setEnv(env, "GCM_INTERACTIVE", "never")
	if mayUseNetwork(op) && lookEnv(env, "GIT_SSH_COMMAND") == "" && lookEnv(env, "GIT_SSH") == "" &&
		!s.hasSSHCommandConfig(ctx, bin, dir, env) {
		env = setEnv(env, "GIT_SSH_COMMAND", batchSSH)
	}
	return env
}

// mayUseNetwork reports whether op can reach a remote (and so run ssh).
// Checkout can, in a partial clone.
func mayUseNetwork(op agentpb.GitOp) bool {
	switch op {
	case agentpb.GitOp_GIT_OP_PULL, agentpb.GitOp_GIT_OP_PUSH, agentpb.GitOp_GIT_OP_CHECKOUT,
		agentpb.GitOp_GIT_OP_RAW, agentpb.GitOp_GIT_OP_UNSPECIFIED:
		return true
	}
	return false
}

// hasSSHCommandConfig reports whether core.sshCommand is set for dir (an
// environment GIT_SSH_COMMAND would override the owner's choice).
func (s *Service) hasSSHCommandConfig(ctx context.Context, bin, dir string, env []string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "config", "--get", "core.sshCommand")
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.Output()
	return err == nil && len(bytes.TrimSpace(out)) > 0
}

// setEnv sets key=value in env, replacing any existing entry (keys compare
// case-insensitively on Windows).
func setEnv(env []string, key, value string) []string {
	out := env[:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !envKeyEqual(k, key) {
			out = append(out, kv)
		}
	}
	return append(out, key+"="+value)
}

// lookEnv returns key's value in env, or "".
func lookEnv(env []string, key string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && envKeyEqual(k, key) {
			return v
		}
	}
	return ""
}

func envKeyEqual(a, b string) bool {
	if runtime.GOOS == "windows" {
		return strings.EqualFold(a, b)
	}
	return a == b
}
