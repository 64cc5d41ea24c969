package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// The process helpers run against real processes: a marked sleep, a zombie,
// the test process itself.

func TestMarkedProcessesFindsAndKills(t *testing.T) {
	runID := "test" + strconv.Itoa(os.Getpid())
	env := append(os.Environ(), MarkerEnv+"="+runID)
	c, err := startChild("sleep", []string{"60"}, env, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.kill)
	other, err := startChild("sleep", []string{"60"}, append(os.Environ(), MarkerEnv+"=another-run"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(other.kill)

	got := MarkedProcesses(runID)
	if !slices.Equal(got, []int{c.pid()}) {
		t.Fatalf("MarkedProcesses = %v, want [%d]", got, c.pid())
	}
	killPIDs(got)
	if !c.wait(5 * time.Second) {
		t.Fatal("killed child did not exit")
	}
	if got := MarkedProcesses(runID); len(got) != 0 {
		t.Errorf("after kill: %v", got)
	}
	if !Alive(other.pid()) {
		t.Error("another run's process was touched")
	}
}

func TestAliveTreatsZombiesAsGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Unreaped, it becomes a zombie once it exits.
	deadline := time.Now().Add(5 * time.Second)
	for Alive(pid) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if Alive(pid) {
		t.Error("an exited, unreaped child reads as alive")
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err != nil {
		t.Errorf("the zombie should still have a /proc entry: %v", err)
	}
	_ = cmd.Wait()
	if !Alive(os.Getpid()) {
		t.Error("the test process reads as dead")
	}
}

func TestStopEscalatesToKill(t *testing.T) {
	// A shell that ignores SIGTERM: stop must end it after the grace.
	c, err := startChild("sh", []string{"-c", "trap '' TERM; sleep 60 & wait"}, os.Environ(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the trap is set
	start := time.Now()
	c.stop(300 * time.Millisecond)
	if !c.exited() {
		t.Fatal("stop returned with the process alive")
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Error("stop did not wait for the grace")
	}
	// The background sleep was in the group and is gone too.
	pgid := c.pid()
	if err := syscall.Kill(-pgid, 0); err == nil {
		if left := waitGone(groupMembers(pgid), time.Second); len(left) > 0 {
			t.Errorf("group members left: %v", left)
		}
	}
}

// groupMembers lists the live processes of process group pgid.
func groupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid && Alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func TestReadMemAndFDs(t *testing.T) {
	m, err := ReadMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSSKiB <= 0 || m.PeakKiB < m.RSSKiB {
		t.Errorf("mem = %+v", m)
	}
	before, err := FDCount(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := FDCount(os.Getpid())
	f.Close()
	if after != before+1 {
		t.Errorf("fds %d -> %d after one open", before, after)
	}
	if _, err := ReadMem(1 << 30); err == nil {
		t.Error("no error for a missing process")
	}
}

func TestReadPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pid")
	go func() {
		time.Sleep(50 * time.Millisecond)
		_ = os.WriteFile(path, []byte("1234\n"), 0o644)
	}()
	if pid, err := readPID(path, 5*time.Second); err != nil || pid != 1234 {
		t.Errorf("readPID = %d, %v", pid, err)
	}
	if _, err := readPID(filepath.Join(t.TempDir(), "never"), 50*time.Millisecond); err == nil {
		t.Error("no error for a file that never appears")
	}
}
