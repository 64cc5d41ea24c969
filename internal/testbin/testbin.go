// Package testbin builds this module's commands for tests that run them as
// real processes. Each distinct build (package + link flags) happens once
// per test process, into one temp dir shared by the package's tests, and
// with the build configuration of the test binary itself (its environment,
// and -race when it was built with it), so the packages `go test` already
// compiled come from the build cache and only the main package is compiled
// and linked again. A test process that uses it calls Main from TestMain.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// AgentPkg is the import path of the opengeni-agent command.
const AgentPkg = "github.com/opengeni/opengeni-agent/cmd/opengeni-agent"

const module = "github.com/opengeni/opengeni-agent"

var (
	mu     sync.Mutex
	dir    string // created on first use, removed by Main
	builds = map[string]*build{}
)

type build struct {
	once sync.Once
	path string
	err  error
}

// Main runs the tests and removes the built binaries: call it as the whole
// of TestMain.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if dir != "" {
		os.RemoveAll(dir)
	}
	mu.Unlock()
	os.Exit(code)
}

// Agent returns opengeni-agent built with version (and, when publicKey is
// not "", the update public key) stamped in the way internal/cmd/release
// does; "" keeps the source's version.
func Agent(t testing.TB, version, publicKey string) string {
	t.Helper()
	ld := "-s -w"
	if version != "" {
		ld += " -X " + module + "/agent.Version=" + version
	}
	if publicKey != "" {
		ld += " -X " + module + "/agent/update.PublicKey=" + publicKey
	}
	return Command(t, AgentPkg, ld)
}

// Command returns pkg (an import path, a directory or a .go file) built with
// ldflags, building it on the first call for this pair.
func Command(t testing.TB, pkg, ldflags string) string {
	t.Helper()
	path, err := Build(pkg, ldflags)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Build is Command for callers without a testing.TB (TestMain).
func Build(pkg, ldflags string) (string, error) {
	mu.Lock()
	if dir == "" {
		d, err := os.MkdirTemp("", "testbin-")
		if err != nil {
			mu.Unlock()
			return "", err
		}
		dir = d
	}
	key := pkg + "\x00" + ldflags
	b, ok := builds[key]
	if !ok {
		name := strconv.Itoa(len(builds)) + "-" + strings.TrimSuffix(filepath.Base(pkg), ".go")
		if runtime.GOOS == "windows" {
			name += ".exe"
		}
		b = &build{path: filepath.Join(dir, name)}
		builds[key] = b
	}
	mu.Unlock()
	b.once.Do(func() { b.err = goBuild(b.path, pkg, ldflags) })
	return b.path, b.err
}

func goBuild(out, pkg, ldflags string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		//lint:ignore SA1019 fallback when go is not on PATH: tests run on the machine that built them
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	args := []string{"build", "-o", out, "-ldflags", ldflags}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(gobin, append(args, pkg)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
