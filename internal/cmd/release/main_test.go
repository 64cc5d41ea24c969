package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
)

// TestReleaseSaysWhatItIsDoing runs a release of a tiny main package for
// this host and checks that each step is announced before its result, in
// order, and that the steps produced their files.
func TestReleaseSaysWhatItIsDoing(t *testing.T) {
	target := update.TargetFor(runtime.GOOS, runtime.GOARCH)
	if target == "unknown" {
		t.Skip("SKIP (not a pass): no release target for this host")
	}
	out := t.TempDir()
	var log bytes.Buffer // stdout and progress interleaved, as in a terminal
	c := config{Out: out, Version: "1.2.3", KeyFile: publish.TestKeyFile(), Channel: "beta", MinSupported: "0.0.0", Rollout: 100,
		Platforms: []string{runtime.GOOS + "/" + runtime.GOARCH}, Pkg: "./testdata/tiny", Installers: "../../../installers"}
	if err := run(c, &log, &log); err != nil {
		t.Fatalf("%v\n%s", err, &log)
	}
	asset := update.AssetName(target)
	steps := []string{
		`release: building \./testdata/tiny ` + runtime.GOOS + "/" + runtime.GOARCH + ` \(1/1, CGO_ENABLED=0\)`,
		regexp.QuoteMeta(target) + ` +[0-9.]+ MB`,
		`release: signing ` + regexp.QuoteMeta(asset) + ` \([0-9.]+ MB\)`,
		`release: writing SHA256SUMS \(signed\)`,
		`release: writing manifest ` + regexp.QuoteMeta(filepath.Join(out, "agent", "beta", "manifest.json")) + ` \(signed, version 1\.2\.3, 1 artifacts\)`,
		`release: writing install\.sh, install\.ps1, uninstall\.sh \(pinned to key `,
		`signed 1 artifacts and `,
		`release: done in `,
	}
	rest := log.String()
	for _, step := range steps {
		loc := regexp.MustCompile(`(?m)^` + step).FindStringIndex(rest)
		if loc == nil {
			t.Fatalf("missing or out of order: %q\n%s", step, &log)
		}
		rest = rest[loc[1]:]
	}
	for _, f := range []string{"agent/v1.2.3/" + asset + ".minisig", "agent/beta/manifest.json.minisig", "agent/latest/SHA256SUMS.minisig", "install.sh"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("step output missing: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(out, ".build")); !os.IsNotExist(err) {
		t.Errorf("build dir left behind (%v)", err)
	}
	if strings.Count(log.String(), "release: building") != 1 {
		t.Errorf("built more than once:\n%s", &log)
	}
	t.Logf("\n%s", &log)
}
