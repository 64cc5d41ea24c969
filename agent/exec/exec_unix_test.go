//go:build unix

package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// testEnv is a small, fixed base environment, so tests do not depend on the
// runner's.
func testEnv() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "OG_BASE=base", "OG_OVER=base", "SHELL=/bin/sh"}
}

func newTestService(t *testing.T, opts Options) (*Service, workspace.Root) {
	t.Helper()
	if opts.Root.Dir == "" {
		dir, err := filepath.EvalSymlinks(t.TempDir()) // macOS: /var -> /private/var, as pwd prints it
		if err != nil {
			t.Fatal(err)
		}
		opts.Root = workspace.Root{Dir: dir, Home: filepath.Join(dir, "home")}
	}
	if opts.Env == nil {
		opts.Env = testEnv
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return New(opts), opts.Root
}

// testCtx bounds a test's Exec calls: hitting it is the failure, not a
// wall-clock assertion.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestExecResults(t *testing.T) {
	s, root := newTestService(t, Options{})
	for _, d := range []string{"sub", "home/h", "bin"} {
		if err := os.MkdirAll(filepath.Join(root.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeScript(t, filepath.Join(root.Dir, "bin", "og-tool"), "#!/bin/sh\necho tool-ran\n")
	writeScript(t, filepath.Join(root.Dir, "sub", "local.sh"), "#!/bin/sh\necho local-ran\n")

	tests := []struct {
		name       string
		req        *agentpb.ExecRequest
		wantExit   int32
		wantStdout string
		wantStderr string
	}{
		{name: "echo", req: &agentpb.ExecRequest{Command: []string{"echo hello"}, Shell: true}, wantStdout: "hello\n"},
		{name: "shell joins parts with spaces", req: &agentpb.ExecRequest{Command: []string{"echo", "a", "b"}, Shell: true}, wantStdout: "a b\n"},
		{name: "nonzero exit is a result", req: &agentpb.ExecRequest{Command: []string{"echo oops >&2; exit 7"}, Shell: true}, wantExit: 7, wantStderr: "oops\n"},
		{name: "killed by signal", req: &agentpb.ExecRequest{Command: []string{"kill -9 $$"}, Shell: true}, wantExit: -1},
		{name: "stdin fed then closed", req: &agentpb.ExecRequest{Command: []string{"cat"}, Stdin: []byte("piped-in\n")}, wantStdout: "piped-in\n"},
		{name: "empty stdin reads EOF", req: &agentpb.ExecRequest{Command: []string{"cat"}}, wantStdout: ""},
		{name: "argv is not interpreted", req: &agentpb.ExecRequest{Command: []string{"printf", "%s|", "a b", "$HOME", "*", "'q'"}}, wantStdout: "a b|$HOME|*|'q'|"},
		{name: "env overrides, base kept", req: &agentpb.ExecRequest{Command: []string{`printf %s-%s-%s "$OG_BASE" "$OG_OVER" "$OG_NEW"`}, Shell: true, Env: map[string]string{"OG_OVER": "over", "OG_NEW": "new"}}, wantStdout: "base-over-new"},
		{name: "cwd empty is root", req: &agentpb.ExecRequest{Command: []string{"pwd"}}, wantStdout: root.Dir + "\n"},
		{name: "cwd relative", req: &agentpb.ExecRequest{Command: []string{"pwd"}, Cwd: "sub"}, wantStdout: filepath.Join(root.Dir, "sub") + "\n"},
		{name: "cwd tilde", req: &agentpb.ExecRequest{Command: []string{"pwd"}, Cwd: "~/h"}, wantStdout: filepath.Join(root.Home, "h") + "\n"},
		{name: "PATH from request", req: &agentpb.ExecRequest{Command: []string{"og-tool"}, Env: map[string]string{"PATH": filepath.Join(root.Dir, "bin") + ":/usr/bin:/bin"}}, wantStdout: "tool-ran\n"},
		{name: "relative program against cwd", req: &agentpb.ExecRequest{Command: []string{"./local.sh"}, Cwd: "sub"}, wantStdout: "local-ran\n"},
		{name: "SHELL from request", req: &agentpb.ExecRequest{Command: []string{"echo $0"}, Shell: true, Env: map[string]string{"SHELL": "/bin/sh"}}, wantStdout: "/bin/sh\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Exec(testCtx(t), tt.req)
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if resp.ExitCode != tt.wantExit || resp.TimedOut {
				t.Errorf("exit %d timed_out %v, want exit %d not timed out (stderr %q)", resp.ExitCode, resp.TimedOut, tt.wantExit, resp.Stderr)
			}
			if string(resp.Stdout) != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", resp.Stdout, tt.wantStdout)
			}
			if string(resp.Stderr) != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", resp.Stderr, tt.wantStderr)
			}
		})
	}
}

func TestExecSpawnFailures(t *testing.T) {
	s, root := newTestService(t, Options{})
	noExec := filepath.Join(root.Dir, "noexec")
	if err := os.WriteFile(noExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		req       *agentpb.ExecRequest
		wantCode  agentpb.ErrorCode
		wantErrno string
	}{
		{"missing program", &agentpb.ExecRequest{Command: []string{"og-definitely-not-a-program"}}, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, ""},
		{"missing absolute program", &agentpb.ExecRequest{Command: []string{"/nonexistent/og-prog"}}, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, ""},
		{"missing cwd", &agentpb.ExecRequest{Command: []string{"true"}, Cwd: "no/such/dir"}, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, ""},
		{"missing shell", &agentpb.ExecRequest{Command: []string{"true"}, Shell: true, Env: map[string]string{"SHELL": "/nonexistent/sh"}}, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, ""},
		// Even root cannot exec a file without any execute bit.
		{"not executable", &agentpb.ExecRequest{Command: []string{noExec}}, agentpb.ErrorCode_ERROR_CODE_OS, strconv.Itoa(int(unix.EACCES))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Exec(testCtx(t), tt.req)
			if err == nil {
				t.Fatalf("Exec succeeded (%+v), want an error", resp)
			}
			pe := agenterr.ToProto(err)
			if pe.Code != tt.wantCode {
				t.Errorf("code = %v (%q), want %v", pe.Code, pe.Message, tt.wantCode)
			}
			if !strings.Contains(pe.Message, "spawn ") {
				t.Errorf("message %q lacks the spawn context", pe.Message)
			}
			if tt.wantErrno != "" && pe.Detail["errno"] != tt.wantErrno {
				t.Errorf("errno = %q, want %q", pe.Detail["errno"], tt.wantErrno)
			}
		})
	}
}

func TestExecTimeoutKillsWholeTree(t *testing.T) {
	s, root := newTestService(t, Options{})
	pidfile := filepath.Join(root.Dir, "pid")
	// The shell ignores SIGTERM and its background child holds stdout: only
	// SIGKILL to the whole group ends both.
	script := fmt.Sprintf(`trap "" TERM; sleep 60 & echo $! > %s; echo started; wait`, pidfile)
	resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{script}, Shell: true, TimeoutMs: 2000})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if !resp.TimedOut || resp.ExitCode != -1 {
		t.Errorf("timed_out %v exit %d, want true and -1", resp.TimedOut, resp.ExitCode)
	}
	if string(resp.Stdout) != "started\n" {
		t.Errorf("stdout = %q, want the output captured before the timeout", resp.Stdout)
	}
	pid := readPid(t, pidfile)
	natstest.Eventually(t, 10*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("grandchild %d still alive", pid)
		}
		return nil
	})
}

func TestExecDefaultAndMaxTimeoutApply(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts Options
		ms   uint32
	}{
		{"default", Options{DefaultTimeout: 300 * time.Millisecond}, 0},
		{"max clamps", Options{MaxTimeout: 300 * time.Millisecond}, 60000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestService(t, tt.opts)
			resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{"sleep", "30"}, TimeoutMs: tt.ms})
			if err != nil {
				t.Fatal(err)
			}
			if !resp.TimedOut {
				t.Errorf("timed_out = false, want true")
			}
		})
	}
}

func TestExecBackgroundChildHoldingPipeDoesNotHang(t *testing.T) {
	s, root := newTestService(t, Options{})
	pidfile := filepath.Join(root.Dir, "pid")
	script := fmt.Sprintf(`echo parent-out; sleep 30 & echo $! > %s`, pidfile)
	resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{script}, Shell: true, TimeoutMs: 60000})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	pid := readPid(t, pidfile)
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	if resp.TimedOut || resp.ExitCode != 0 {
		t.Errorf("timed_out %v exit %d, want a normal exit", resp.TimedOut, resp.ExitCode)
	}
	if string(resp.Stdout) != "parent-out\n" {
		t.Errorf("stdout = %q", resp.Stdout)
	}
	if !strings.Contains(string(resp.Stderr), "[opengeni-agent: stdout cut: read 11 bytes; "+cutMarker+"]") {
		t.Errorf("stderr = %q, want a note that reading stdout stopped", resp.Stderr)
	}
	// A normal exit must leave background processes alone (users start servers).
	if !alive(pid) {
		t.Errorf("background child %d was killed on a normal exit", pid)
	}
}

func TestExecCallerCancelKillsAndErrors(t *testing.T) {
	s, root := newTestService(t, Options{})
	pidfile := filepath.Join(root.Dir, "pid")
	ctx, cancel := context.WithCancel(testCtx(t))
	go func() {
		// Cancel once the command is surely running.
		for i := 0; i < 1000; i++ {
			if _, err := os.Stat(pidfile); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	script := fmt.Sprintf(`sleep 60 & echo $! > %s; wait`, pidfile)
	_, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{script}, Shell: true})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	pid := readPid(t, pidfile)
	natstest.Eventually(t, 10*time.Second, func() error {
		if alive(pid) {
			return fmt.Errorf("child %d still alive after cancel", pid)
		}
		return nil
	})
}

func TestExecOutputCap(t *testing.T) {
	s, _ := newTestService(t, Options{})
	markerRe := regexp.MustCompile(`\[opengeni-agent: (stdout|stderr) truncated: kept (\d+) of (\d+) bytes\]`)
	tests := []struct {
		name       string
		script     string
		wantCut    map[string]int64 // stream -> total bytes
		wantStderr string           // prefix kept whole
	}{
		{"stdout floods", `head -c 100000 /dev/zero | tr '\0' a; echo err-line >&2`, map[string]int64{"stdout": 100000}, "err-line\n"},
		{"both flood", `head -c 100000 /dev/zero | tr '\0' a; head -c 70000 /dev/zero | tr '\0' b >&2`, map[string]int64{"stdout": 100000, "stderr": 70000}, "bbbb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := opctx.WithMaxReply(testCtx(t), 8192)
			budget := opctx.PayloadBudget(ctx)
			resp, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{tt.script}, Shell: true})
			if err != nil {
				t.Fatal(err)
			}
			if n := proto.Size(resp); n > budget {
				t.Errorf("encoded reply is %d bytes, over the budget %d", n, budget)
			}
			if len(resp.Stdout) == 0 || strings.Trim(string(resp.Stdout), "a") != "" {
				t.Errorf("stdout should be a non-empty head of a's, got %d bytes", len(resp.Stdout))
			}
			if !strings.HasPrefix(string(resp.Stderr), tt.wantStderr) {
				t.Errorf("stderr starts %.40q, want %q", resp.Stderr, tt.wantStderr)
			}
			got := map[string]int64{}
			for _, m := range markerRe.FindAllStringSubmatch(string(resp.Stderr), -1) {
				kept, _ := strconv.Atoi(m[2])
				total, _ := strconv.ParseInt(m[3], 10, 64)
				got[m[1]] = total
				if m[1] == "stdout" && kept != len(resp.Stdout) {
					t.Errorf("marker says kept %d, reply has %d stdout bytes", kept, len(resp.Stdout))
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.wantCut) {
				t.Errorf("truncation markers %v, want %v; stderr tail %q", got, tt.wantCut, tail(resp.Stderr, 200))
			}
		})
	}

	t.Run("no budget keeps everything", func(t *testing.T) {
		resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{`head -c 1048576 /dev/zero | tr '\0' a`}, Shell: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Stdout) != 1<<20 || len(resp.Stderr) != 0 {
			t.Errorf("stdout %d bytes stderr %q, want all 1 MiB and no marker", len(resp.Stdout), tail(resp.Stderr, 200))
		}
	})
}

func TestExecLargeStdinNotRead(t *testing.T) {
	s, _ := newTestService(t, Options{})
	resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{"true"}, Stdin: bytes.Repeat([]byte("x"), 4<<20)})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	if resp.ExitCode != 0 || resp.TimedOut {
		t.Errorf("exit %d timed_out %v", resp.ExitCode, resp.TimedOut)
	}
}

func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	natstest.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	return pid
}

// alive reports whether pid exists and is not a zombie (in a container
// nobody may reap a killed orphan).
func alive(pid int) bool {
	if unix.Kill(pid, 0) != nil {
		return false
	}
	if runtime.GOOS != "linux" {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func tail(b []byte, n int) []byte {
	return b[max(len(b)-n, 0):]
}
