package gitsvc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitEnv isolates git from the machine's configuration: a temporary HOME,
// no system config, a fixed identity and fixed dates (so hashes are stable).
func gitEnv(home string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GIT_") || k == "HOME" || k == "XDG_CONFIG_HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Ada Lovelace", "GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada Lovelace", "GIT_COMMITTER_EMAIL=ada@example.com",
		"GIT_AUTHOR_DATE=2024-01-02T03:04:05Z", "GIT_COMMITTER_DATE=2024-01-02T03:04:05Z",
		"GIT_TERMINAL_PROMPT=0",
	)
}

// sandbox is a directory of test repositories with an isolated git.
type sandbox struct {
	t    testing.TB
	dir  string
	home string
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	sb := &sandbox{t: t, dir: dir, home: filepath.Join(dir, ".home")}
	if err := os.MkdirAll(sb.home, 0o755); err != nil {
		t.Fatal(err)
	}
	sb.git("", "config", "--global", "init.defaultBranch", "main")
	sb.git("", "config", "--global", "protocol.file.allow", "always")
	return sb
}

// path is a path inside the sandbox.
func (sb *sandbox) path(rel string) string { return filepath.Join(sb.dir, filepath.FromSlash(rel)) }

// git runs git in the sandbox directory rel and returns stdout; failure is
// fatal.
func (sb *sandbox) git(rel string, args ...string) string {
	sb.t.Helper()
	out, err := sb.gitErr(rel, args...)
	if err != nil {
		sb.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (sb *sandbox) gitErr(rel string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = sb.path(rel)
	if rel == "" {
		cmd.Dir = sb.dir
	}
	cmd.Env = gitEnv(sb.home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cmdIn is a command run in dir with the sandbox's git environment.
func (sb *sandbox) cmdIn(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = gitEnv(sb.home)
	return cmd
}

// write creates or replaces a file (and its directories).
func (sb *sandbox) write(rel, content string) {
	sb.t.Helper()
	p := sb.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		sb.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		sb.t.Fatal(err)
	}
}

// execRunner runs commands on this machine, the way the agent would.
type execRunner struct{ env []string }

func (r execRunner) Run(ctx context.Context, workdir string, argv []string) ([]byte, []byte, int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = workdir
	cmd.Env = r.env
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return []byte(stdout.String()), []byte(stderr.String()), ee.ExitCode(), nil
	}
	if err != nil {
		return nil, nil, 0, err
	}
	return []byte(stdout.String()), []byte(stderr.String()), 0, nil
}

// The scenarios shared by the golden files and the end-to-end tests. Each
// builds repositories under the sandbox and returns the repo to look at.

// scenarioAheadBehind: a clone one commit ahead of and one behind its
// bare origin, with a staged edit, an unstaged edit and an untracked file.
func scenarioAheadBehind(sb *sandbox) string {
	sb.git("", "init", "-q", "--bare", "origin.git")
	sb.git("", "clone", "-q", "origin.git", "repo")
	sb.write("repo/a.txt", "one\n")
	sb.write("repo/b.txt", "bee\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "first")
	sb.git("repo", "push", "-q", "-u", "origin", "main")
	sb.git("", "clone", "-q", "origin.git", "other")
	sb.write("other/c.txt", "sea\n")
	sb.git("other", "add", ".")
	sb.git("other", "commit", "-qm", "theirs")
	sb.git("other", "push", "-q")
	sb.write("repo/a.txt", "one\ntwo\n")
	sb.git("repo", "commit", "-qam", "ours")
	sb.git("repo", "fetch", "-q")
	sb.write("repo/a.txt", "one\ntwo\nthree\n")
	sb.write("repo/b.txt", "bee\nbuzz\n")
	sb.git("repo", "add", "b.txt")
	sb.write("repo/new.txt", "fresh\n")
	return "repo"
}

// scenarioRename: a staged rename, a deletion, an untracked directory and
// ignored files.
func scenarioRename(sb *sandbox) string {
	sb.git("", "init", "-q", "repo")
	sb.write("repo/old name.txt", "content that moves\nline two\n")
	sb.write("repo/gone.txt", "bye\n")
	sb.write("repo/.gitignore", "*.log\nbuild/\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "init")
	sb.git("repo", "mv", "old name.txt", "new name.txt")
	sb.git("repo", "rm", "-q", "gone.txt")
	sb.write("repo/debug.log", "noise\n")
	sb.write("repo/build/out.bin", "bin\n")
	sb.write("repo/newdir/x.txt", "x\n")
	sb.write("repo/newdir/y.txt", "y\n")
	return "repo"
}

// scenarioConflict: a merge that conflicts on one file.
func scenarioConflict(sb *sandbox) string {
	sb.git("", "init", "-q", "repo")
	sb.write("repo/f.txt", "base\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "base")
	sb.git("repo", "checkout", "-qb", "side")
	sb.write("repo/f.txt", "side\n")
	sb.git("repo", "commit", "-qam", "side")
	sb.git("repo", "checkout", "-q", "main")
	sb.write("repo/f.txt", "main\n")
	sb.git("repo", "commit", "-qam", "main")
	if out, err := sb.gitErr("repo", "merge", "side"); err == nil {
		sb.t.Fatalf("merge should conflict: %s", out)
	}
	return "repo"
}

// scenarioDetached: HEAD detached at the first of two commits.
func scenarioDetached(sb *sandbox) string {
	sb.git("", "init", "-q", "repo")
	sb.write("repo/f.txt", "1\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "one")
	sb.write("repo/f.txt", "2\n")
	sb.git("repo", "commit", "-qam", "two")
	sb.git("repo", "checkout", "-q", "HEAD~1")
	sb.write("repo/f.txt", "dirty\n")
	return "repo"
}

// scenarioEmpty: a repository with no commits, one staged and one
// untracked file.
func scenarioEmpty(sb *sandbox) string {
	sb.git("", "init", "-q", "repo")
	sb.write("repo/staged.txt", "s\n")
	sb.git("repo", "add", "staged.txt")
	sb.write("repo/loose.txt", "l\n")
	return "repo"
}

// scenarioUnicode: names with spaces and non-ASCII characters, modified and
// untracked.
func scenarioUnicode(sb *sandbox) string {
	sb.git("", "init", "-q", "repo")
	sb.write("repo/dir with space/ünïcødé file.txt", "a\n")
	sb.write("repo/日本語.md", "b\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "names")
	sb.write("repo/dir with space/ünïcødé file.txt", "a\nchanged\n")
	sb.write("repo/日本語.md", "b\nchanged\n")
	sb.write("repo/new ñame.txt", "n\n")
	return "repo"
}

// scenarioSubmodule: a submodule moved to a new commit, and one with
// untracked content.
func scenarioSubmodule(sb *sandbox) string {
	sb.git("", "init", "-q", "lib")
	sb.write("lib/lib.txt", "v1\n")
	sb.git("lib", "add", ".")
	sb.git("lib", "commit", "-qm", "lib v1")
	sb.git("", "init", "-q", "repo")
	sb.write("repo/main.txt", "m\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "main")
	sb.git("repo", "submodule", "add", "-q", "../lib", "moved")
	sb.git("repo", "submodule", "add", "-q", "../lib", "dirty")
	sb.git("repo", "commit", "-qm", "add submodules")
	sb.write("repo/moved/lib.txt", "v2\n")
	sb.git("repo/moved", "commit", "-qam", "lib v2")
	sb.write("repo/dirty/untracked.txt", "u\n")
	return "repo"
}

// scenarioHistory: commits with a body, a merge and a binary file, for log,
// show and diff.
func scenarioHistory(sb *sandbox) string {
	sb.git("", "init", "-q", "repo")
	sb.write("repo/code.go", "package main\n\nfunc main() {\n\tprintln(\"hi\")\n}\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "root commit")
	sb.git("repo", "checkout", "-qb", "feature")
	sb.write("repo/feature.txt", "feature work\n")
	sb.git("repo", "add", ".")
	sb.git("repo", "commit", "-qm", "feature: add file", "-m", "A body line.\n\nSecond paragraph.")
	sb.git("repo", "checkout", "-q", "main")
	sb.write("repo/code.go", "package main\n\nfunc main() {\n\tprintln(\"hello\")\n\tprintln(\"world\")\n}\n")
	sb.git("repo", "commit", "-qam", "main: say more")
	sb.git("repo", "merge", "-q", "--no-edit", "feature")
	// Worktree changes for diff: an edit with no final newline, a binary
	// file, an image, a rename with an edit, a deletion.
	sb.write("repo/code.go", "package main\n\nfunc main() {\n\tprintln(\"hello\")\n}")
	if err := os.WriteFile(sb.path("repo/blob.bin"), []byte{0, 1, 2, 3, 0, 255}, 0o644); err != nil {
		sb.t.Fatal(err)
	}
	sb.write("repo/logo.svg", "<svg/>\n")
	sb.git("repo", "add", "blob.bin", "logo.svg")
	sb.git("repo", "mv", "feature.txt", "renamed feature.txt")
	sb.write("repo/renamed feature.txt", "feature work\nmore\n")
	sb.git("repo", "add", "renamed feature.txt")
	return "repo"
}
