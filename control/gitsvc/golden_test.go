package gitsvc

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/gittest"
)

// Run `go test ./control/gitsvc -run TestGolden -update` to recapture the
// git output in testdata/ from real repositories and rewrite the expected
// parses; review the diff of the .json files before committing.
var update = flag.Bool("update", false, "recapture testdata from real git and rewrite the golden parses")

// capture is one git output kept in testdata.
type capture struct {
	file     string // testdata/<file>
	scenario func(*gittest.Sandbox) string
	args     []string // git args, run in the scenario's repo
}

var captures = []capture{
	{"status/ahead-behind.z", gittest.AheadBehind, statusArgs},
	{"status/rename-untracked.z", gittest.Rename, statusArgs},
	{"status/rename-ignored.z", gittest.Rename, append(statusArgs[:len(statusArgs):len(statusArgs)], "--ignored")},
	{"status/conflict.z", gittest.Conflict, statusArgs},
	{"status/detached.z", gittest.Detached, statusArgs},
	{"status/empty.z", gittest.Empty, statusArgs},
	{"status/unicode.z", gittest.Unicode, statusArgs},
	{"status/submodule.z", gittest.Submodule, statusArgs},
	{"numstat/worktree.z", gittest.History, numstatArgs(nil, nil)},
	{"numstat/staged.z", gittest.History, numstatArgs([]string{"--cached"}, nil)},
	{"numstat/unicode.z", gittest.Unicode, numstatArgs(nil, nil)},
	{"patch/no-newline.patch", gittest.History, patchArgs(3, nil, []string{"code.go"})},
	{"patch/rename-edit.patch", gittest.History, patchArgs(3, []string{"--cached"}, []string{"feature.txt", "renamed feature.txt"})},
	{"patch/added.patch", gittest.History, patchArgs(3, []string{"--cached"}, []string{"logo.svg"})},
	{"patch/merge-range.patch", gittest.History, patchArgs(1, []string{"HEAD~2", "HEAD"}, []string{"code.go"})},
	{"patch/deleted.patch", gittest.Rename, patchArgs(3, []string{"--cached"}, []string{"gone.txt"})},
	{"log/history.out", gittest.History, logArgs(5, 0, "HEAD", nil)},
}

func TestGoldenCapture(t *testing.T) {
	if !*update {
		t.Skip("run with -update to recapture testdata")
	}
	for _, c := range captures {
		sb := gittest.New(t, "")
		repo := c.scenario(sb)
		stdout, err := sb.Cmd(sb.Path(repo), "git", c.args...).Output()
		if err != nil {
			t.Fatalf("%s: git %v: %v", c.file, c.args, err)
		}
		writeTestdata(t, c.file, stdout)
	}
	// DetectRepos: find's output over nested repositories.
	sb := gittest.New(t, "")
	for _, r := range []string{"top", "a/nested", "a/b/deep/too-deep"} {
		sb.Git("", "init", "-q", r)
	}
	cmd := sb.Cmd(sb.Dir, "find", ".", "-maxdepth", "3", "-name", ".git", "-type", "d")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	writeTestdata(t, "repos/find.out", out)
}

func writeTestdata(t *testing.T, file string, b []byte) {
	t.Helper()
	p := filepath.Join("testdata", filepath.FromSlash(file))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// golden compares got (as indented JSON) with testdata/<file>.json,
// rewriting it under -update.
func golden(t *testing.T, file string, got any) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	p := filepath.Join("testdata", filepath.FromSlash(file)+".json")
	if *update {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read golden (run with -update): %v", err)
	}
	if !bytes.Equal(want, b) {
		t.Errorf("%s: parse differs from golden\n--- got\n%s\n--- want\n%s", file, b, want)
	}
}

func readTestdata(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", filepath.FromSlash(file)))
	if err != nil {
		t.Fatalf("read testdata (run with -update): %v", err)
	}
	return b
}

func TestGolden(t *testing.T) {
	if *update {
		TestGoldenCapture(t)
	}
	for _, c := range captures {
		t.Run(c.file, func(t *testing.T) {
			in := readTestdata(t, c.file)
			switch {
			case strings.HasPrefix(c.file, "status/"):
				golden(t, c.file, ParseStatus(in))
			case strings.HasPrefix(c.file, "numstat/"):
				golden(t, c.file, ParseNumstat(in))
			case strings.HasPrefix(c.file, "patch/"):
				st, hunks := ParsePatch(string(in))
				golden(t, c.file, map[string]any{"status": st, "hunks": hunks})
			case strings.HasPrefix(c.file, "log/"):
				commits, more := ParseLog(in, 3)
				golden(t, c.file, map[string]any{"commits": commits, "hasMore": more})
			}
		})
	}
	t.Run("repos/find.out", func(t *testing.T) {
		golden(t, "repos/find.out", ParseRepos(readTestdata(t, "repos/find.out")))
	})
}
