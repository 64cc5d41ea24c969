package git

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/gittest"
)

// testHome is the HOME of every git in these tests, the Service's included
// (TestMain points the process environment at it).
var testHome string

// TestMain isolates git from the machine: the process environment (which
// the Service passes on to git) gets a temporary HOME, no system config, a
// fixed identity and fixed dates.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-git-test-")
	if err != nil {
		panic(err)
	}
	testHome = dir
	for _, kv := range gittest.Env(testHome) {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	os.Unsetenv("GIT_TERMINAL_PROMPT")
	if _, err := exec.LookPath("git"); err == nil {
		if err := gittest.Configure(testHome); err != nil {
			panic(err)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sandbox is a gittest.Sandbox whose gits share testHome with the Service.
type sandbox struct {
	*gittest.Sandbox
	dir string
}

func newSandbox(t testing.TB) *sandbox {
	t.Helper()
	sb := gittest.New(t, testHome)
	return &sandbox{Sandbox: sb, dir: sb.Dir}
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

func readFile(sb *sandbox, rel string) (string, error) {
	b, err := os.ReadFile(sb.path(rel))
	return string(b), err
}
