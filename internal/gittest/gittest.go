// Package gittest builds real git repositories for tests: an isolated git
// environment, a sandbox directory to build repositories in, and the
// scenarios that the agent's git service and the control plane's gitsvc
// are both tested against.
package gittest

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// Env isolates git from the machine's configuration: the process
// environment without its git variables, a temporary HOME, no system
// config, a fixed identity and fixed dates (so hashes are stable).
func Env(home string) []string {
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

// Configure writes the global git configuration the scenarios rely on into
// home: branches start as main, and submodules may be cloned from local
// paths.
func Configure(home string) error {
	for _, args := range [][]string{
		{"config", "--global", "init.defaultBranch", "main"},
		{"config", "--global", "protocol.file.allow", "always"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Env = Env(home)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// Sandbox is a directory of test repositories with an isolated git.
type Sandbox struct {
	T    testing.TB
	Dir  string // a fresh t.TempDir(), symbolic links resolved
	Home string // the HOME of every git the sandbox runs
}

// New makes a sandbox in a fresh t.TempDir(), or skips the test when git is
// not installed. Its gits run with home as HOME, which the caller has set up
// with Configure; an empty home gives the sandbox a configured HOME of its
// own.
func New(t testing.TB, home string) *Sandbox {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	if home == "" {
		home = filepath.Join(dir, ".home")
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Configure(home); err != nil {
			t.Fatal(err)
		}
	}
	return &Sandbox{T: t, Dir: dir, Home: home}
}

// Path is a path inside the sandbox.
func (sb *Sandbox) Path(rel string) string { return filepath.Join(sb.Dir, filepath.FromSlash(rel)) }

// Git runs git in the sandbox directory rel and returns its output; failure
// is fatal.
func (sb *Sandbox) Git(rel string, args ...string) string {
	sb.T.Helper()
	out, err := sb.GitErr(rel, args...)
	if err != nil {
		sb.T.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// GitErr runs git in the sandbox directory rel and returns its output and
// error.
func (sb *Sandbox) GitErr(rel string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = sb.Path(rel)
	if rel == "" {
		cmd.Dir = sb.Dir
	}
	cmd.Env = Env(sb.Home)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Cmd is a command run in dir with the sandbox's git environment.
func (sb *Sandbox) Cmd(dir, name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = Env(sb.Home)
	return cmd
}

// Write creates or replaces a file (and its directories).
func (sb *Sandbox) Write(rel, content string) {
	sb.T.Helper()
	p := sb.Path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		sb.T.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		sb.T.Fatal(err)
	}
}

// Commit writes files (paths relative to the repository repo), stages
// everything in repo (git add .) and commits it with the message msg.
func (sb *Sandbox) Commit(repo, msg string, files map[string]string) {
	sb.T.Helper()
	for rel, content := range files {
		sb.Write(path.Join(repo, rel), content)
	}
	sb.Git(repo, "add", ".")
	sb.Git(repo, "commit", "-qm", msg)
}
