package git

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/agent/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// waitDelay is how long Wait waits for the output pipes after the process
// group is killed (a grandchild outside the group could hold them open).
const waitDelay = 2 * time.Second

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
	stdout := &cappedBuffer{max: s.maxOutput}
	stderr := &cappedBuffer{max: s.maxOutput}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	ownProcessGroup(cmd)
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
	cmd.WaitDelay = waitDelay

	if err := cmd.Start(); err != nil {
		if ctx.Err() != nil {
			return nil, s.ctxError(op, ctx.Err())
		}
		return nil, agenterr.FromIO("spawn git", err)
	}
	err := cmd.Wait()
	if err != nil && ctx.Err() != nil {
		return nil, s.ctxError(op, ctx.Err())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) {
		return nil, agenterr.FromIO("exec wait", err)
	}
	resp := &agentpb.GitResponse{
		ExitCode: int32(cmd.ProcessState.ExitCode()), // -1 when killed by a signal
		Stdout:   stdout.Bytes(),
		Stderr:   stderr.Bytes(),
	}
	for name, b := range map[string]*cappedBuffer{"stdout": stdout, "stderr": stderr} {
		if b.dropped > 0 {
			resp.Stderr = fmt.Appendf(resp.Stderr, "\n[opengeni-agent: %s truncated: kept %d bytes, dropped %d]\n", name, b.Len(), b.dropped)
		}
	}
	if op == agentpb.GitOp_GIT_OP_STATUS && resp.ExitCode == 0 {
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

// cappedBuffer keeps the first max bytes written and counts the rest.
type cappedBuffer struct {
	bytes.Buffer
	max     int
	dropped int64
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := b.max - b.Buffer.Len()
	if room >= len(p) {
		return b.Buffer.Write(p)
	}
	if room > 0 {
		b.Buffer.Write(p[:room])
	}
	b.dropped += int64(len(p) - max(room, 0))
	return len(p), nil
}

// Bytes returns the kept bytes, or nil when there are none.
func (b *cappedBuffer) Bytes() []byte {
	if b.Buffer.Len() == 0 {
		return nil
	}
	return b.Buffer.Bytes()
}
