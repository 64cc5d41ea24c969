package exec

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// These tests run on Windows, and on Linux CI under wine (e2e
// TestWindowsUnderWine runs this package's TestWindows* tests).

// helperExit is the exit code of this test binary started as a program
// under test (OG_EXEC_HELPER set): a real Windows executable to look up.
const helperExit = 7

func init() {
	if v := os.Getenv("OG_EXEC_HELPER"); v != "" {
		fmt.Print("helper:" + v)
		os.Exit(helperExit)
	}
}

// winTempDir is a fresh directory. Not t.TempDir: wine 8 cannot run
// os.RemoveAll, so cleanup here is best effort.
func winTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ogexec")
	if err != nil {
		t.Fatal(err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeTree(dir) })
	return dir
}

// removeTree removes dir bottom-up with os.Remove, ignoring failures.
func removeTree(dir string) {
	var paths []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return nil
	})
	slices.Reverse(paths)
	for _, p := range paths {
		os.Remove(p)
	}
}

// installHelper copies this test binary to dir\name.exe.
func installHelper(t *testing.T, dir, name string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name+".exe")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestWindowsExecHonoursRequestPath: a PATH in the request is where an argv
// program is looked up (it was ignored: only the agent's PATH was searched).
func TestWindowsExecHonoursRequestPath(t *testing.T) {
	root := winTempDir(t)
	bin := filepath.Join(root, "tools bin")
	installHelper(t, bin, "ogprobe")
	s := New(Options{Root: workspace.Root{Dir: root}})
	ctx := context.Background()

	tests := []struct {
		name string
		path string
	}{
		{"absolute entry", `C:\nowhere;` + bin},
		{"quoted entry", `"` + bin + `"`},
		{"entry relative to cwd", `tools bin`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Exec(ctx, &agentpb.ExecRequest{
				Command: []string{"ogprobe", "arg"},
				Env:     map[string]string{"PATH": tt.path, "OG_EXEC_HELPER": "path"},
			})
			if err != nil {
				t.Fatalf("exec: %v", err)
			}
			if resp.GetExitCode() != helperExit || string(resp.GetStdout()) != "helper:path" {
				t.Fatalf("exit %d stdout %q stderr %q", resp.GetExitCode(), resp.GetStdout(), resp.GetStderr())
			}
		})
	}

	// Without the directory in PATH the program is NOT_FOUND.
	_, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{"ogprobe"}, Env: map[string]string{"PATH": `C:\nowhere`}})
	if pe := agenterr.ToProto(err); pe == nil || pe.Code != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("missing program: %v, want NOT_FOUND", err)
	}
}

// TestWindowsExecRunsProgramInWorkingDirectory: a program in the command's
// working directory (here also the agent's) runs, as it does from cmd.exe;
// it failed with os/exec's "cannot run executable found relative to current
// directory".
func TestWindowsExecRunsProgramInWorkingDirectory(t *testing.T) {
	root := winTempDir(t)
	installHelper(t, root, "ogcwd")
	t.Chdir(root)
	s := New(Options{Root: workspace.Root{Dir: root}})
	ctx := context.Background()

	rooted := strings.TrimPrefix(filepath.Join(root, "ogcwd"), filepath.VolumeName(root)) // \...\ogcwd on the current drive
	for _, argv0 := range []string{"ogcwd", `.\ogcwd`, "ogcwd.exe", `.\ogcwd.exe`, rooted} {
		resp, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{argv0}, Env: map[string]string{"OG_EXEC_HELPER": "cwd"}})
		if err != nil {
			t.Fatalf("%s: %v", argv0, err)
		}
		if resp.GetExitCode() != helperExit || string(resp.GetStdout()) != "helper:cwd" {
			t.Fatalf("%s: exit %d stdout %q stderr %q", argv0, resp.GetExitCode(), resp.GetStdout(), resp.GetStderr())
		}
	}

	// Windows' opt-out of the current-directory search is honoured; an
	// explicit .\ path still runs.
	env := map[string]string{"OG_EXEC_HELPER": "cwd", "NoDefaultCurrentDirectoryInExePath": "1", "PATH": `C:\nowhere`}
	_, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{"ogcwd"}, Env: env})
	if pe := agenterr.ToProto(err); pe == nil || pe.Code != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("opted out: %v, want NOT_FOUND", err)
	}
	if resp, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{`.\ogcwd`}, Env: env}); err != nil || resp.GetExitCode() != helperExit {
		t.Fatalf(`opted out, .\ogcwd: %v %v`, resp, err)
	}
}

func TestWindowsSearchDirs(t *testing.T) {
	tests := []struct {
		env  []string
		want []string
	}{
		{[]string{`PATH=C:\a;;b`}, []string{`C:\work`, `C:\a`, `C:\work\b`}},
		{[]string{`PATH=C:\a`, `path=C:\z`}, []string{`C:\work`, `C:\z`}}, // last wins, case-insensitively
		{[]string{`PATH="C:\x;y"`, `NoDefaultCurrentDirectoryInExePath=`}, []string{`C:\x;y`}},
		{nil, []string{`C:\work`}},
	}
	for _, tt := range tests {
		if got := searchDirs(`C:\work`, tt.env); !slices.Equal(got, tt.want) {
			t.Errorf("searchDirs(%q) = %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestWindowsPathExts(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{".com", ".exe", ".bat", ".cmd"}},
		{".EXE;.Py;;cmd", []string{".exe", ".py", ".cmd"}},
	}
	for _, tt := range tests {
		if got := pathExts(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("pathExts(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
