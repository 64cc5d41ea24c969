package git

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/gittest"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// TestHTTPAuthNeverPrompts: a remote that asks for credentials makes git
// fail at once instead of waiting on a terminal or an askpass window.
func TestHTTPAuthNeverPrompts(t *testing.T) {
	sb := gittest.New(t, testHome)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	t.Setenv("GIT_ASKPASS", "/bin/should-not-run")
	t.Setenv("SSH_ASKPASS", "/bin/should-not-run")
	svc := New(Options{Root: workspace.Root{Dir: sb.Dir}, Timeout: 30 * time.Second})
	start := time.Now()
	resp := run(t, svc, agentpb.GitOp_GIT_OP_RAW, "", "ls-remote", srv.URL+"/private.git")
	if resp.ExitCode == 0 {
		t.Fatalf("ls-remote succeeded against a 401")
	}
	if !strings.Contains(string(resp.Stderr), "terminal prompts disabled") && !strings.Contains(string(resp.Stderr), "could not read Username") {
		t.Fatalf("stderr = %q", resp.Stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %s", d)
	}
}

func TestEnvIsNonInteractive(t *testing.T) {
	sb := gittest.New(t, testHome)
	scenarioClean(sb)
	svc := cliService(sb)
	bin, err := svc.lookGit()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Setenv("GIT_SSH_COMMAND", "")
	t.Setenv("GIT_SSH", "")
	t.Setenv("GIT_TERMINAL_PROMPT", "1")

	env := svc.env(ctx, bin, agentpb.GitOp_GIT_OP_PUSH, sb.Path("repo"))
	for k, want := range map[string]string{
		"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "",
		"SSH_ASKPASS_REQUIRE": "never", "GCM_INTERACTIVE": "never", "GIT_SSH_COMMAND": batchSSH,
	} {
		if got := lookEnv(env, k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if n := strings.Count(strings.Join(env, "\n"), "GIT_TERMINAL_PROMPT="); n != 1 {
		t.Errorf("GIT_TERMINAL_PROMPT set %d times", n)
	}
	// Local ops never reach ssh: the owner's setup is left alone.
	if got := lookEnv(svc.env(ctx, bin, agentpb.GitOp_GIT_OP_STATUS, sb.Path("repo")), "GIT_SSH_COMMAND"); got != "" {
		t.Errorf("status: GIT_SSH_COMMAND = %q", got)
	}
	// The owner's own ssh command wins, from the environment or the config.
	t.Setenv("GIT_SSH_COMMAND", "my-ssh -i key")
	if got := lookEnv(svc.env(ctx, bin, agentpb.GitOp_GIT_OP_PULL, sb.Path("repo")), "GIT_SSH_COMMAND"); got != "my-ssh -i key" {
		t.Errorf("GIT_SSH_COMMAND = %q", got)
	}
	t.Setenv("GIT_SSH_COMMAND", "")
	sb.Git("repo", "config", "core.sshCommand", "ssh -i ~/.ssh/work")
	if got := lookEnv(svc.env(ctx, bin, agentpb.GitOp_GIT_OP_PULL, sb.Path("repo")), "GIT_SSH_COMMAND"); got != "" {
		t.Errorf("with core.sshCommand: GIT_SSH_COMMAND = %q", got)
	}
}
