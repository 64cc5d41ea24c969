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
