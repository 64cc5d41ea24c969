package gitsvc

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/gittest"
)

// gitEnv isolates git from the machine's configuration (see gittest.Env).
func gitEnv(home string) []string { return gittest.Env(home) }

// sandbox is a gittest.Sandbox with a HOME of its own.
type sandbox struct {
	*gittest.Sandbox
	dir  string
	home string
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	sb := gittest.New(t, "")
	return &sandbox{Sandbox: sb, dir: sb.Dir, home: sb.Home}
}

func (sb *sandbox) path(rel string) string { return sb.Path(rel) }

func (sb *sandbox) git(rel string, args ...string) string {
	sb.T.Helper()
	return sb.Git(rel, args...)
}

func (sb *sandbox) write(rel, content string) {
	sb.T.Helper()
	sb.Write(rel, content)
}

func (sb *sandbox) cmdIn(dir, name string, args ...string) *exec.Cmd {
	return sb.Cmd(dir, name, args...)
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

// scenario runs a gittest scenario in a sandbox.
func scenario(build func(*gittest.Sandbox) string) func(*sandbox) string {
	return func(sb *sandbox) string { return build(sb.Sandbox) }
}

var (
	scenarioAheadBehind = scenario(gittest.AheadBehind)
	scenarioRename      = scenario(gittest.Rename)
	scenarioConflict    = scenario(gittest.Conflict)
	scenarioDetached    = scenario(gittest.Detached)
	scenarioEmpty       = scenario(gittest.Empty)
	scenarioUnicode     = scenario(gittest.Unicode)
	scenarioSubmodule   = scenario(gittest.Submodule)
	scenarioHistory     = scenario(gittest.History)
)
