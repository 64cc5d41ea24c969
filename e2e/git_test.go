package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/opengeni/opengeni-agent/control/gitsvc"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func gitT(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// TestGitEndToEnd: the git op and the structured services over a session,
// against a real repository on the machine.
func TestGitEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed on this machine")
	}
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)
	repo := filepath.Join(e.root, "repo")
	os.MkdirAll(repo, 0o755)
	gitT(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "tracked.txt"), []byte("one\n"), 0o644)
	gitT(t, repo, "add", ".")
	gitT(t, repo, "commit", "-qm", "first")
	os.WriteFile(filepath.Join(repo, "tracked.txt"), []byte("one\ntwo\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "new file ü.txt"), []byte("x"), 0o644)

	resp, err := s.Git(ctx, agentpb.GitOp_GIT_OP_STATUS, "/workspace/repo")
	if err != nil || resp.GetExitCode() != 0 {
		t.Fatalf("git status: %v %v", resp, err)
	}
	st := resp.GetStatus()
	if st.GetBranch() != "main" || st.GetClean() || len(st.GetFiles()) != 2 {
		t.Fatalf("status = %v", st)
	}
	codes := map[string]string{}
	for _, f := range st.GetFiles() {
		codes[f.GetPath()] = f.GetCode()
	}
	if codes["tracked.txt"] != " M" || codes["new file ü.txt"] != "??" {
		t.Fatalf("codes = %v", codes)
	}

	// A non-zero exit is a result.
	resp, err = s.Git(ctx, agentpb.GitOp_GIT_OP_RAW, "/workspace/repo", "rev-parse", "no-such-ref")
	if err != nil || resp.GetExitCode() == 0 || len(resp.GetStderr()) == 0 {
		t.Fatalf("failing git: %v %v", resp, err)
	}

	svc := gitsvc.New(gitsvc.SessionRunner(s), gitsvc.Options{})
	status, err := svc.Status(ctx, "repo")
	if err != nil || !status.IsRepo || status.Head == nil || *status.Head != "main" || len(status.Files) != 2 {
		t.Fatalf("gitsvc status = %+v, %v", status, err)
	}
	diff, err := svc.Diff(ctx, gitsvc.DiffRequest{Path: "repo"})
	if err != nil || len(diff.Files) != 1 || diff.Files[0].Path != "tracked.txt" {
		t.Fatalf("gitsvc diff = %+v, %v", diff, err)
	}
	log, err := svc.Log(ctx, gitsvc.LogRequest{Path: "repo"})
	if err != nil || len(log.Commits) != 1 || log.Commits[0].Subject != "first" || log.HasMore {
		t.Fatalf("gitsvc log = %+v, %v", log, err)
	}
}
