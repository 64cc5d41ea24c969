package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
	"github.com/opengeni/opengeni-agent/internal/testbin"
)

func TestMain(m *testing.M) { testbin.Main(m) }

// buildAgent builds this command with a version and the TEST-ONLY release
// key stamped in, once per test run (internal/testbin). Callers copy the
// result before running or replacing it.
func buildAgent(t *testing.T, version, pub string) string {
	t.Helper()
	return testbin.Agent(t, version, pub)
}

// crasherSource is a program that panics at start: a release whose binary
// cannot even pass the health gate.
var crasherSource = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "opengeni-crasher-")
	if err != nil {
		return "", err
	}
	src := filepath.Join(dir, "crash.go")
	return src, os.WriteFile(src, []byte("package main\n\nfunc main() { panic(\"crash at start\") }\n"), 0o644)
})

// buildCrasher builds the crasher once per test run.
func buildCrasher(t *testing.T) string {
	t.Helper()
	src, err := crasherSource()
	if err != nil {
		t.Fatal(err)
	}
	return testbin.Command(t, src, "")
}

// TestSelfUpdateEndToEnd drives the real binary's `update` command against a
// signed release served on loopback: a newer build is applied and runs, a
// build that crashes at start is rolled back, a downgrade and an unsigned
// manifest are refused.
func TestSelfUpdateEndToEnd(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix paths")
	}
	if testing.Short() {
		t.Skip("builds the agent twice")
	}
	key, err := publish.LoadKey(publish.TestKeyFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	v1 := buildAgent(t, "1.0.0", key.PublicKeyLine())
	v2 := buildAgent(t, "2.0.0", key.PublicKeyLine())
	crasher := buildCrasher(t)

	bin := filepath.Join(t.TempDir(), "opengeni-agent")
	data, _ := os.ReadFile(v1)
	os.WriteFile(bin, data, 0o755)

	relDir := t.TempDir()
	srv := httptest.NewServer(http.FileServer(http.Dir(relDir)))
	defer srv.Close()
	publishBuild := func(version, path string) {
		t.Helper()
		os.RemoveAll(relDir)
		if _, err := publish.Write(publish.Release{Dir: relDir, Version: version, Key: key,
			Artifacts: map[string]string{update.Target(): path}}); err != nil {
			t.Fatal(err)
		}
	}
	agent := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		home := t.TempDir()
		// no service manager reachable: the update swaps and health-checks only
		cmd.Env = []string{"HOME=" + home, "PATH=/nonexistent", "OPENGENI_CONFIG_DIR=" + home}
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	version := func() string {
		out, _ := agent("version")
		return strings.TrimSpace(out)
	}

	publishBuild("2.0.0", v2)
	out, code := agent("update", "--check", "--base-url", srv.URL)
	if code != 0 || !strings.Contains(out, "a verified update is available: 1.0.0 -> 2.0.0") || version() != "opengeni-agent 1.0.0" {
		t.Fatalf("--check: %d %s (now %s)", code, out, version())
	}
	out, code = agent("update", "--base-url", srv.URL)
	if code != 0 || version() != "opengeni-agent 2.0.0" {
		t.Fatalf("update: %d %s (now %s)", code, out, version())
	}
	if prev, _ := exec.Command(update.PreviousPath(bin), "version").Output(); strings.TrimSpace(string(prev)) != "opengeni-agent 1.0.0" {
		t.Fatalf("previous binary: %q", prev)
	}
	t.Logf("applied: %s", out)

	publishBuild("1.5.0", v1) // a downgrade, even validly signed
	out, code = agent("update", "--base-url", srv.URL)
	if code != 0 || !strings.Contains(out, "up to date") || version() != "opengeni-agent 2.0.0" {
		t.Fatalf("downgrade: %d %s (now %s)", code, out, version())
	}

	publishBuild("3.0.0", crasher)
	out, code = agent("update", "--base-url", srv.URL)
	if code != 1 || !strings.Contains(out, "rolled back") || version() != "opengeni-agent 2.0.0" {
		t.Fatalf("crashing build: %d %s (now %s)", code, out, version())
	}
	t.Logf("crash rolled back: %s", out)

	publishBuild("4.0.0", v2)
	os.Remove(filepath.Join(relDir, "agent", "stable", "manifest.json.minisig"))
	out, code = agent("update", "--base-url", srv.URL)
	if code != 1 || version() != "opengeni-agent 2.0.0" {
		t.Fatalf("unsigned manifest: %d %s (now %s)", code, out, version())
	}
	// signed by a key other than the pinned one (the production default)
	publishBuild("4.0.0", v2)
	other := buildAgent(t, "1.0.0", update.PublicKey)
	data, _ = os.ReadFile(other)
	os.WriteFile(bin, data, 0o755)
	out, code = agent("update", "--base-url", srv.URL)
	if code != 1 || !strings.Contains(out, "signature") || version() != "opengeni-agent 1.0.0" {
		t.Fatalf("foreign key: %d %s (now %s)", code, out, version())
	}
}
