package git

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/gittest"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// cliService uses the git binary; goGitService hides it.
func cliService(sb *gittest.Sandbox) *Service {
	return New(Options{Root: workspace.Root{Dir: sb.Dir}})
}

func goGitService(sb *gittest.Sandbox) *Service {
	return New(Options{Root: workspace.Root{Dir: sb.Dir}, GitPath: filepath.Join(sb.Dir, "no-git-here")})
}

func run(t *testing.T, s *Service, op agentpb.GitOp, cwd string, args ...string) *agentpb.GitResponse {
	t.Helper()
	resp, err := s.Git(context.Background(), &agentpb.GitRequest{Op: op, Cwd: cwd, Args: args})
	if err != nil {
		t.Fatalf("git %s %v: %v", opName(op), args, err)
	}
	return resp
}

func status(t *testing.T, s *Service, cwd string) *agentpb.GitStatus {
	t.Helper()
	resp := run(t, s, agentpb.GitOp_GIT_OP_STATUS, cwd)
	if resp.ExitCode != 0 || resp.Status == nil {
		t.Fatalf("status exit %d: %s", resp.ExitCode, resp.Stderr)
	}
	return resp.Status
}

// files renders a status's files as "code path staged?" for comparisons.
func files(st *agentpb.GitStatus) string {
	var b strings.Builder
	for _, f := range st.Files {
		b.WriteString("[" + f.Code + "]" + f.Path)
		if f.Staged {
			b.WriteString("(staged)")
		}
		b.WriteString("; ")
	}
	return b.String()
}

var statusCases = []struct {
	name     string
	scenario func(*gittest.Sandbox) string
	cwd      string // relative to the scenario's repo
	branch   string
	upstream string
	ahead    int32
	behind   int32
	files    string
	clean    bool
}{
	{"ahead-behind", gittest.AheadBehind, "", "main", "origin/main", 1, 1,
		"[ M]a.txt; [M ]b.txt(staged); [??]new.txt; ", false},
	{"rename-untracked-ignored", gittest.Rename, "", "main", "", 0, 0,
		"[D ]gone.txt(staged); [R ]new name.txt(staged); [??]newdir/; ", false},
	{"conflict", gittest.Conflict, "", "main", "", 0, 0, "[UU]f.txt; ", false},
	{"detached", gittest.Detached, "", "(detached)", "", 0, 0, "[ M]f.txt; ", false},
	{"empty", gittest.Empty, "", "main", "", 0, 0, "[A ]staged.txt(staged); [??]loose.txt; ", false},
	{"unicode", gittest.Unicode, "", "main", "", 0, 0,
		"[ M]dir with space/ünïcødé file.txt; [ M]日本語.md; [??]new ñame.txt; ", false},
	{"unicode-subdir", gittest.Unicode, "dir with space", "main", "", 0, 0,
		"[ M]ünïcødé file.txt; [ M]../日本語.md; [??]../new ñame.txt; ", false},
	{"submodule", gittest.Submodule, "", "main", "", 0, 0, "[ M]dirty; [ M]moved; ", false},
	{"clean", scenarioClean, "", "main", "origin/main", 0, 0, "", true},
}

// scenarioClean: a clone in sync with its origin, with an ignored file.
func scenarioClean(sb *gittest.Sandbox) string {
	sb.Git("", "init", "-q", "--bare", "origin.git")
	sb.Git("", "clone", "-q", "origin.git", "repo")
	sb.Commit("repo", "init", map[string]string{".gitignore": "*.tmp\n"})
	sb.Git("repo", "push", "-q", "-u", "origin", "main")
	sb.Write("repo/x.tmp", "ignored\n")
	return "repo"
}

func TestStatus(t *testing.T) {
	for _, tc := range statusCases {
		t.Run(tc.name, func(t *testing.T) {
			sb := gittest.New(t, testHome)
			repo := tc.scenario(sb)
			cwd := filepath.Join(sb.Dir, repo, tc.cwd)
			for name, svc := range map[string]*Service{"cli": cliService(sb), "go-git": goGitService(sb)} {
				st := status(t, svc, cwd)
				if st.Branch != tc.branch || st.Upstream != tc.upstream || st.Ahead != tc.ahead || st.Behind != tc.behind || st.Clean != tc.clean {
					t.Errorf("%s: status = %s", name, prototext.Format(st))
				}
				if got := files(st); got != tc.files {
					t.Errorf("%s: files = %q, want %q", name, got, tc.files)
				}
			}
		})
	}
}

// TestStatusBothPathsAgree runs the git binary and go-git on the same
// repositories and compares the structured status.
func TestStatusBothPathsAgree(t *testing.T) {
	for _, tc := range statusCases {
		t.Run(tc.name, func(t *testing.T) {
			sb := gittest.New(t, testHome)
			repo := tc.scenario(sb)
			cwd := filepath.Join(sb.Dir, repo, tc.cwd)
			cli, gg := status(t, cliService(sb), cwd), status(t, goGitService(sb), cwd)
			if !proto.Equal(cli, gg) {
				t.Fatalf("cli:\n%s\ngo-git:\n%s", prototext.Format(cli), prototext.Format(gg))
			}
			// The raw porcelain text agrees too, line for line.
			a := run(t, cliService(sb), agentpb.GitOp_GIT_OP_STATUS, cwd, "-z")
			b := run(t, goGitService(sb), agentpb.GitOp_GIT_OP_STATUS, cwd, "-z")
			if !proto.Equal(a.Status, b.Status) {
				t.Fatalf("-z: cli:\n%s\ngo-git:\n%s", prototext.Format(a.Status), prototext.Format(b.Status))
			}
			if tc.name != "submodule" && tc.name != "conflict" && string(a.Stdout) != string(b.Stdout) {
				t.Errorf("raw -z output differs:\ncli:    %q\ngo-git: %q", a.Stdout, b.Stdout)
			}
		})
	}
}

func TestNotARepository(t *testing.T) {
	sb := gittest.New(t, testHome)
	sb.Write("plain/x.txt", "x")
	for name, svc := range map[string]*Service{"cli": cliService(sb), "go-git": goGitService(sb)} {
		resp := run(t, svc, agentpb.GitOp_GIT_OP_STATUS, "plain")
		if resp.ExitCode != 128 || !strings.Contains(string(resp.Stderr), "not a git repository") || resp.Status != nil {
			t.Errorf("%s: exit %d stderr %q status %v", name, resp.ExitCode, resp.Stderr, resp.Status)
		}
	}
}

func TestMissingCwdIsNotFound(t *testing.T) {
	sb := gittest.New(t, testHome)
	for name, svc := range map[string]*Service{"cli": cliService(sb), "go-git": goGitService(sb)} {
		_, err := svc.Git(context.Background(), &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_STATUS, Cwd: "does/not/exist"})
		if ae := agenterr.ToProto(err); ae == nil || ae.Code != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND || ae.Detail["context"] != "spawn git" {
			t.Errorf("%s: err = %v (%v)", name, err, ae)
		}
	}
}

func TestPushAndPull(t *testing.T) {
	sb := gittest.New(t, testHome)
	sb.Git("", "init", "-q", "--bare", "origin.git")
	sb.Git("", "clone", "-q", "origin.git", "a")
	sb.Git("", "clone", "-q", "origin.git", "b")
	svc := cliService(sb)
	sb.Write("a/f.txt", "from a\n")
	if r := run(t, svc, agentpb.GitOp_GIT_OP_ADD, "a", "f.txt"); r.ExitCode != 0 {
		t.Fatalf("add: %s", r.Stderr)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_COMMIT, "a", "-m", "from a"); r.ExitCode != 0 {
		t.Fatalf("commit: %s", r.Stderr)
	}
	// The clone of an empty origin already tracks origin/main, which does
	// not exist yet: an upstream with no ahead/behind.
	if st := status(t, svc, "a"); st.Upstream != "origin/main" || st.Ahead != 0 || !st.Clean {
		t.Fatalf("before push: %s", prototext.Format(st))
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_PUSH, "a", "-u", "origin", "main"); r.ExitCode != 0 {
		t.Fatalf("push: exit %d %s", r.ExitCode, r.Stderr)
	}
	if st := status(t, svc, "a"); st.Upstream != "origin/main" || st.Ahead != 0 || st.Behind != 0 {
		t.Fatalf("after push: %s", prototext.Format(st))
	}
	r := run(t, svc, agentpb.GitOp_GIT_OP_PULL, "b", "origin", "main")
	if r.ExitCode != 0 {
		t.Fatalf("pull: exit %d %s", r.ExitCode, r.Stderr)
	}
	log := run(t, svc, agentpb.GitOp_GIT_OP_LOG, "b", "--oneline")
	if !strings.Contains(string(log.Stdout), "from a") {
		t.Fatalf("log after pull: %q", log.Stdout)
	}
	// A non-zero exit is a response, not an error.
	if r := run(t, svc, agentpb.GitOp_GIT_OP_PUSH, "b", "nowhere", "main"); r.ExitCode == 0 || len(r.Stderr) == 0 {
		t.Fatalf("push to a missing remote: exit %d", r.ExitCode)
	}
}

func TestWithoutGitNetworkOpsAreUnsupported(t *testing.T) {
	sb := gittest.New(t, testHome)
	scenarioClean(sb)
	for _, op := range []agentpb.GitOp{agentpb.GitOp_GIT_OP_PULL, agentpb.GitOp_GIT_OP_PUSH, agentpb.GitOp_GIT_OP_RAW} {
		_, err := goGitService(sb).Git(context.Background(), &agentpb.GitRequest{Op: op, Cwd: "repo"})
		ae := agenterr.ToProto(err)
		if ae == nil || ae.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || !strings.Contains(ae.Message, "git is not installed on this machine") {
			t.Errorf("%s: %v", op, ae)
		}
	}
}

func TestUnknownOp(t *testing.T) {
	_, err := New(Options{}).Git(context.Background(), &agentpb.GitRequest{Op: agentpb.GitOp(42)})
	if !errors.Is(err, agenterr.ErrUnsupported) && agenterr.ToProto(err).Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("err = %v", err)
	}
}

func TestCLIAndGoGitLogMatch(t *testing.T) {
	sb := gittest.New(t, testHome)
	repo := gittest.History(sb)
	for _, args := range [][]string{nil, {"--oneline"}, {"-n", "2"}, {"-1", "HEAD~1"}, {"--", "feature.txt"}} {
		a := run(t, cliService(sb), agentpb.GitOp_GIT_OP_LOG, repo, args...)
		b := run(t, goGitService(sb), agentpb.GitOp_GIT_OP_LOG, repo, args...)
		if a.ExitCode != 0 || string(a.Stdout) != string(b.Stdout) {
			t.Errorf("log %v differs:\ncli:\n%s\ngo-git:\n%s", args, a.Stdout, b.Stdout)
		}
	}
	sb.Git("", "init", "-q", "empty")
	a := run(t, cliService(sb), agentpb.GitOp_GIT_OP_LOG, "empty")
	b := run(t, goGitService(sb), agentpb.GitOp_GIT_OP_LOG, "empty")
	if a.ExitCode != b.ExitCode || string(a.Stderr) != string(b.Stderr) {
		t.Errorf("empty log: cli %d %q, go-git %d %q", a.ExitCode, a.Stderr, b.ExitCode, b.Stderr)
	}
}

// TestGoGitWorkflow drives add, commit, branch, checkout and diff with the
// git binary hidden, checking the result with the real git.
func TestGoGitWorkflow(t *testing.T) {
	sb := gittest.New(t, testHome)
	sb.Git("", "init", "-q", "repo")
	svc := goGitService(sb)
	sb.Write("repo/a.txt", "one\ntwo\nthree\n")
	sb.Write("repo/dir/b.txt", "bee\n")

	if r := run(t, svc, agentpb.GitOp_GIT_OP_ADD, "repo", "-A"); r.ExitCode != 0 {
		t.Fatalf("add: %s", r.Stderr)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_ADD, "repo", "missing.txt"); r.ExitCode != 128 || !strings.Contains(string(r.Stderr), "did not match any files") {
		t.Fatalf("add missing: %d %s", r.ExitCode, r.Stderr)
	}
	r := run(t, svc, agentpb.GitOp_GIT_OP_COMMIT, "repo", "-m", "first")
	if r.ExitCode != 0 || !strings.HasPrefix(string(r.Stdout), "[main (root-commit) ") || !strings.Contains(string(r.Stdout), "2 files changed, 4 insertions(+)") {
		t.Fatalf("commit: %d %q %q", r.ExitCode, r.Stdout, r.Stderr)
	}
	if got := sb.Git("repo", "log", "--format=%s %an"); got != "first Ada Lovelace\n" {
		t.Fatalf("git log after go-git commit: %q", got)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_COMMIT, "repo", "-m", "again"); r.ExitCode != 1 || !strings.Contains(string(r.Stdout), "nothing to commit") {
		t.Fatalf("empty commit: %d %q", r.ExitCode, r.Stdout)
	}

	// Diff: worktree against the index, then staged.
	sb.Write("repo/a.txt", "one\nTWO\nthree\n")
	r = run(t, svc, agentpb.GitOp_GIT_OP_DIFF, "repo")
	for _, want := range []string{"diff --git a/a.txt b/a.txt", "--- a/a.txt", "+++ b/a.txt", "@@ -1,3 +1,3 @@", "-two", "+TWO"} {
		if !strings.Contains(string(r.Stdout), want) {
			t.Fatalf("diff lacks %q:\n%s", want, r.Stdout)
		}
	}
	if cli := sb.Git("repo", "diff"); !strings.Contains(cli, "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n") || !strings.Contains(string(r.Stdout), "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n") {
		t.Fatalf("hunks differ:\ncli:\n%s\ngo-git:\n%s", cli, r.Stdout)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_DIFF, "repo", "--cached"); len(r.Stdout) != 0 {
		t.Fatalf("nothing staged, diff --cached = %q", r.Stdout)
	}
	run(t, svc, agentpb.GitOp_GIT_OP_ADD, "repo", "a.txt")
	if r := run(t, svc, agentpb.GitOp_GIT_OP_DIFF, "repo", "--name-only", "--cached"); string(r.Stdout) != "a.txt\n" {
		t.Fatalf("diff --cached --name-only = %q", r.Stdout)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_COMMIT, "repo", "-m", "second", "-m", "body"); r.ExitCode != 0 {
		t.Fatalf("commit: %s", r.Stderr)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_DIFF, "repo", "HEAD~1", "HEAD"); !strings.Contains(string(r.Stdout), "+TWO") {
		t.Fatalf("diff HEAD~1 HEAD = %q", r.Stdout)
	}

	// Branch and checkout.
	if r := run(t, svc, agentpb.GitOp_GIT_OP_BRANCH, "repo", "topic"); r.ExitCode != 0 {
		t.Fatalf("branch: %s", r.Stderr)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_BRANCH, "repo"); string(r.Stdout) != "* main\n  topic\n" {
		t.Fatalf("branch list = %q", r.Stdout)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_CHECKOUT, "repo", "topic"); r.ExitCode != 0 || string(r.Stderr) != "Switched to branch 'topic'\n" {
		t.Fatalf("checkout: %d %q", r.ExitCode, r.Stderr)
	}
	if got := sb.Git("repo", "branch", "--show-current"); got != "topic\n" {
		t.Fatalf("current branch = %q", got)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_CHECKOUT, "repo", "-b", "new", "HEAD~1"); r.ExitCode != 0 {
		t.Fatalf("checkout -b: %s", r.Stderr)
	}
	if got, _ := os.ReadFile(sb.Path("repo/a.txt")); string(got) != "one\ntwo\nthree\n" {
		t.Fatalf("a.txt after checkout -b new HEAD~1 = %q", got)
	}
	sb.Write("repo/a.txt", "local edit\n")
	if r := run(t, svc, agentpb.GitOp_GIT_OP_CHECKOUT, "repo", "main"); r.ExitCode != 1 || !strings.Contains(string(r.Stderr), "would be overwritten") {
		t.Fatalf("checkout over local changes: %d %q", r.ExitCode, r.Stderr)
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_CHECKOUT, "repo", "--", "a.txt"); r.ExitCode != 0 {
		t.Fatalf("checkout -- a.txt: %s", r.Stderr)
	}
	if st := status(t, svc, "repo"); !st.Clean || st.Branch != "new" {
		t.Fatalf("after restore: %s", prototext.Format(st))
	}
	if r := run(t, svc, agentpb.GitOp_GIT_OP_BRANCH, "repo", "-D", "topic"); !strings.HasPrefix(string(r.Stdout), "Deleted branch topic (was ") {
		t.Fatalf("branch -D: %q %q", r.Stdout, r.Stderr)
	}
	if cli := sb.Git("repo", "status", "--porcelain"); cli != "" {
		t.Fatalf("git sees a dirty tree after the go-git ops: %q", cli)
	}
	// An option the built-in git does not know is UNSUPPORTED, not ignored.
	_, err := svc.Git(context.Background(), &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_LOG, Cwd: "repo", Args: []string{"--graph"}})
	if ae := agenterr.ToProto(err); ae == nil || ae.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("log --graph: %v", err)
	}
}

func TestGoGitTimeout(t *testing.T) {
	sb := gittest.New(t, testHome)
	scenarioClean(sb)
	// go-git cannot be interrupted: an op that outlives the timeout is
	// abandoned and the caller gets TIMEOUT. Block the op until the test ends
	// so the outcome does not depend on how fast the machine is.
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	orig := goGitOps[agentpb.GitOp_GIT_OP_STATUS]
	goGitOps[agentpb.GitOp_GIT_OP_STATUS] = func(ctx context.Context, r *repo, args []string) (*result, error) {
		<-release
		return orig(ctx, r, args)
	}
	t.Cleanup(func() { goGitOps[agentpb.GitOp_GIT_OP_STATUS] = orig })
	svc := New(Options{Root: workspace.Root{Dir: sb.Dir}, GitPath: "/nonexistent/git", Timeout: 20 * time.Millisecond})
	_, err := svc.Git(context.Background(), &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_STATUS, Cwd: "repo"})
	if !errors.Is(err, agenterr.ErrTimeout) {
		t.Fatalf("err = %v", err)
	}
}
