package proctree

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/testutil"
)

// startScript starts sh -c script as a tree and returns it with the lines
// the script writes, read as they come.
func startScript(t *testing.T, opts Options, script string, args ...string) (*Tree, *exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", script, "sh"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tree := New(cmd, opts)
	if err := tree.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tree.Kill(); tree.Release() })
	return tree, cmd, bufio.NewScanner(out)
}

// readPids reads n pids, one a line.
func readPids(t *testing.T, lines *bufio.Scanner, n int) []int {
	t.Helper()
	var pids []int
	for len(pids) < n && lines.Scan() {
		pid, err := strconv.Atoi(lines.Text())
		if err != nil {
			t.Fatalf("line %q: %v", lines.Text(), err)
		}
		pids = append(pids, pid)
	}
	if len(pids) < n {
		t.Fatalf("got pids %v, want %d", pids, n)
	}
	return pids
}

// treeScript prints its own pid, a background sleep's, a child shell's and
// that shell's background sleep's (a grandchild), then waits.
const treeScript = `echo $$
sleep 600 & echo $!
sh -c 'echo $$; sleep 600 & echo $!; wait' &
wait`

// TestKillEndsTheWholeTree: Kill takes the command, its children and its
// grandchildren, whatever the options.
func TestKillEndsTheWholeTree(t *testing.T) {
	for _, opts := range []Options{{}, {Session: true}, {KillOnDrop: true}, {Session: true, KillOnDrop: true}} {
		t.Run(fmt.Sprintf("%+v", opts), func(t *testing.T) {
			tree, cmd, lines := startScript(t, opts, treeScript)
			pids := readPids(t, lines, 4)
			if sid, _ := unix.Getsid(cmd.Process.Pid); (sid == cmd.Process.Pid) != opts.Session {
				t.Errorf("session id %d of pid %d: Session=%v not honoured", sid, cmd.Process.Pid, opts.Session)
			}
			for _, pid := range pids {
				if !running(pid) {
					t.Fatalf("pid %d of %v not running before the kill", pid, pids)
				}
			}
			if err := tree.Kill(); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			_ = tree.Wait()
			testutil.Eventually(t, 10*time.Second, func() error {
				for _, pid := range pids {
					if running(pid) {
						return fmt.Errorf("pid %d of %v still running after Kill", pid, pids)
					}
				}
				return nil
			})
		})
	}
}

// TestStopHonoursTheGrace: Stop sends SIGTERM first; a command that
// handles it (a trap writing a sentinel) finishes its handler and exits on
// its own within the grace, not by SIGKILL.
func TestStopHonoursTheGrace(t *testing.T) {
	sentinel := filepath.Join(t.TempDir(), "sentinel")
	tree, cmd, lines := startScript(t, Options{KillOnDrop: true},
		`trap 'echo handled > "$1"; exit 7' TERM; sleep 600 & echo ready; wait`, sentinel)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("no ready line: %q %v", lines.Text(), lines.Err())
	}
	waited := make(chan error, 1)
	go func() { waited <- tree.Wait() }()
	// A grace no loaded machine exhausts: the handler ends the command. (The
	// sleep is started before "ready": a TERM between its fork and the
	// shell's wait would miss it and leave the shell waiting.)
	if err := tree.Stop(time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	<-waited
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Fatalf("exit code %d (%v), want 7 from the TERM handler", code, cmd.ProcessState)
	}
	if b, err := os.ReadFile(sentinel); err != nil || string(b) != "handled\n" {
		t.Fatalf("sentinel = %q, %v; want the handler's line", b, err)
	}
}

// TestStopKillsAfterTheGrace: a tree that ignores SIGTERM is SIGKILLed once
// the grace is over.
func TestStopKillsAfterTheGrace(t *testing.T) {
	tree, cmd, lines := startScript(t, Options{}, `trap '' TERM; sleep 600 & echo $!; wait`)
	child := readPids(t, lines, 1)[0]
	go func() { _ = tree.Wait() }()
	if err := tree.Stop(10 * time.Millisecond); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("command ended with %v, want SIGKILL", cmd.ProcessState)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if running(child) {
			return fmt.Errorf("child %d ignoring SIGTERM survived the SIGKILL", child)
		}
		return nil
	})
}
