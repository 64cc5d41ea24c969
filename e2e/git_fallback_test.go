package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/gitsvc"
)

// TestGitServiceWithoutGitBinary: on a machine without a git binary the
// structured git service (what `relay ctl git` runs) falls back from exec to
// the agent's git op, whose built-in go-git answers status exactly as the
// machine's git did; a query go-git cannot serve fails with UNSUPPORTED.
func TestGitServiceWithoutGitBinary(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed on this machine (needed for the reference answer)")
	}
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)
	repo := filepath.Join(e.root, "repo")
	os.MkdirAll(repo, 0o755)
	gitT(t, repo, "init", "-q", "-b", "main")
	os.WriteFile(filepath.Join(repo, "tracked.txt"), []byte("one\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "gone.txt"), []byte("x\n"), 0o644)
	gitT(t, repo, "add", ".")
	gitT(t, repo, "commit", "-qm", "first")
	os.WriteFile(filepath.Join(repo, "tracked.txt"), []byte("one\ntwo\n"), 0o644)
	os.Remove(filepath.Join(repo, "gone.txt"))
	os.WriteFile(filepath.Join(repo, "staged.txt"), []byte("s\n"), 0o644)
	gitT(t, repo, "add", "staged.txt")
	os.WriteFile(filepath.Join(repo, "new file ü.txt"), []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(e.root, "plain"), 0o755)

	svc := gitsvc.New(gitsvc.SessionRunner(s), gitsvc.Options{})
	want, err := svc.Status(ctx, "repo") // the machine's git, through exec
	if err != nil || len(want.Files) != 4 {
		t.Fatalf("status with git: %+v, %v", want, err)
	}

	// The agent (this process) loses its git binary.
	t.Setenv("PATH", t.TempDir())
	_, err = s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"git", "--version"}})
	if ce := (*control.Error)(nil); !errors.As(err, &ce) || !ce.OSNotFound {
		t.Fatalf("exec git without a git binary: %v, want NOT_FOUND", err)
	}

	got, err := svc.Status(ctx, "repo")
	if err != nil {
		t.Fatalf("status without git: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("status without git = %+v\nwant (git's) %+v", got, want)
	}
	plain, err := svc.Status(ctx, "plain")
	if err != nil || plain.IsRepo || len(plain.Files) != 0 {
		t.Fatalf("non-repo status without git: %+v, %v", plain, err)
	}

	_, err = svc.Log(ctx, gitsvc.LogRequest{Path: "repo"})
	if ce := (*control.Error)(nil); !errors.As(err, &ce) || ce.Code.String() != "ERROR_CODE_UNSUPPORTED" || !strings.Contains(ce.Message, "not installed") {
		t.Fatalf("log without git: %v, want UNSUPPORTED naming the missing git", err)
	}
}

// TestDetectReposWithoutFind: repository discovery runs find; on a machine
// without a Unix find (Windows' find.exe searches text) it walks the
// directories through the fs ops and finds the same repositories.
func TestDetectReposWithoutFind(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed on this machine")
	}
	if _, err := exec.LookPath("find"); err != nil {
		t.Skip("find is not installed on this machine (needed for the reference answer)")
	}
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)
	for _, dir := range []string{"", "a", "b/c", "d/e/f", "plain/x"} {
		full := filepath.Join(e.root, dir)
		os.MkdirAll(full, 0o755)
		if dir != "plain/x" {
			gitT(t, full, "init", "-q")
		}
	}
	want := []string{"", "a", "b/c"} // d/e/f/.git is four levels down

	svc := gitsvc.New(gitsvc.SessionRunner(s), gitsvc.Options{})
	withFind, err := svc.DetectRepos(ctx)
	if err != nil || !reflect.DeepEqual(withFind, want) {
		t.Fatalf("with find: %q, %v; want %q", withFind, err, want)
	}
	t.Setenv("PATH", t.TempDir()) // the agent (this process) loses find
	walked, err := svc.DetectRepos(ctx)
	if err != nil || !reflect.DeepEqual(walked, want) {
		t.Fatalf("without find: %q, %v; want %q", walked, err, want)
	}
}
