package git

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/capture"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/envmerge"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	"github.com/opengeni/opengeni-agent/internal/proctree"
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
	// A new session: git and every helper it spawns form one tree a timeout
	// kills, with no controlling terminal (so nothing it runs, ssh
	// included, can open /dev/tty to prompt) and, on Windows, no console.
	tree := proctree.New(cmd, proctree.Options{Session: true, KillOnDrop: true})
	defer tree.Release()
	cmd.Cancel = tree.Kill
	cmd.WaitDelay = waitDelay
	leaf := cgroup.Place(ctx, cmd) // the op's resource policy: its own cgroup leaf (else Start fails)
	defer leaf.Close()

	err = tree.Start()
	pipes.Started()
	if err != nil {
		pipes.Drain(ctx, 0)
		if ctx.Err() != nil {
			return nil, s.ctxError(op, ctx.Err())
		}
		return nil, agenterr.FromIO("spawn git", err)
	}
	err = tree.Wait()
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
	env, _ := envmerge.Merge(os.Environ(), nonInteractive) // constant, valid names
	if mayUseNetwork(op) && lookEnv(env, "GIT_SSH_COMMAND") == "" && lookEnv(env, "GIT_SSH") == "" &&
		!s.hasSSHCommandConfig(ctx, bin, dir, env) {
		env = envmerge.Set(env, "GIT_SSH_COMMAND", batchSSH)
	}
	return env
}

// nonInteractive is what env sets over the agent's environment.
var nonInteractive = map[string]string{
	"GIT_TERMINAL_PROMPT": "0",
	"GIT_ASKPASS":         "", // set but empty: git skips core.askPass and SSH_ASKPASS
	"SSH_ASKPASS":         "",
	"SSH_ASKPASS_REQUIRE": "never",
	"GCM_INTERACTIVE":     "never",
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

// lookEnv returns key's value in env, or "".
func lookEnv(env []string, key string) string {
	v, _ := envmerge.Lookup(env, key)
	return v
}
