//go:build unix

package main

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/devstack"
)

// waitOpStream waits until the platform's store routes to the dev machine's
// live instance and knows its Hello offered op-stream (what `relay ctl`
// reads to choose the streamed exec).
func waitOpStream(t *testing.T, st *devstack.Stack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s := st.Platform().Store()
	for {
		inst, _ := s.LiveInstance(ctx, st.WorkspaceID(), st.AgentID())
		offered, _ := s.OffersOpStream(ctx, st.WorkspaceID(), st.AgentID())
		if inst != "" && offered {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the store never saw the machine offer op-stream (instance %q, offered %v)", inst, offered)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// alive reports whether pid is a live process (a zombie is dead: it only
// waits to be reaped by whoever inherited it).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil // no procfs (darwin)
	}
	// pid (comm) STATE ...: comm may hold spaces, the state follows the last ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// `relay ctl exec` over op-stream: the output arrives while the command
// still runs, Ctrl-C (SIGINT) cancels the op on the machine and kills its
// process tree before ctl exits 130 saying so, and exit codes are kept.
func TestCtlExecStreamsAndCtrlCCancelsOnMachine(t *testing.T) {
	bin := builtRelay(t) // before isolate: the build uses the real Go caches
	isolate(t)
	dir := filepath.Join(t.TempDir(), "data")
	st := startStack(t, dir, devstack.Options{})
	waitOpStream(t, st)

	// The exit code of the remote command is kept.
	cmd := exec.Command(bin, "ctl", "--data-dir", dir, "exec", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	out, err := cmd.Output()
	if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 7 || string(out) != "out\n" {
		t.Fatalf("exec exit 7: %v, exit %v, stdout %q", err, cmd.ProcessState, out)
	}

	// A long command: the shell and its sleep write their pids, then
	// "started"; it would run ten minutes.
	pidFile := filepath.Join(t.TempDir(), "pids")
	cmd = exec.Command(bin, "ctl", "--data-dir", dir, "exec", "--", "sh", "-c",
		`sleep 600 & echo "$$ $!" > `+pidFile+`; echo started; wait`)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "started\n" {
		t.Fatalf("first output %q, %v (stderr %s)", line, err, stderr.String())
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid file %q: %v", b, err)
		}
		pids = append(pids, pid)
	}
	if len(pids) != 2 || !alive(pids[0]) || !alive(pids[1]) {
		t.Fatalf("pids %v of the remote shell and its sleep are not both running", pids)
	}

	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("ctl after Ctrl-C: %v, want exit 130 (stderr %s)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted: the command was cancelled on the machine") {
		t.Fatalf("ctl's message after Ctrl-C: %q", stderr.String())
	}
	// ctl returned only after the machine reported the op ended.
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("remote process %d still runs after ctl was interrupted", pid)
		}
	}
}
