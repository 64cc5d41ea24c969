package proctree

import (
	"bytes"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/testutil"
)

// childEnv makes the test binary a process that starts a guarded group,
// has its guard killed and replaced, then waits to be killed (TestMain).
const childEnv = "OG_KILLDROP_TEST_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

func runChild(dir string) int {
	cmd := osexec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if _, err := startGuarded(cmd); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	first := theGuard.pid()
	if first == 0 {
		fmt.Fprintln(os.Stderr, "no guard started")
		return 2
	}
	syscall.Kill(first, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for theGuard.pid() == first || theGuard.pid() == 0 {
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "guard not replaced")
			return 2
		}
		time.Sleep(10 * time.Millisecond)
	}
	report := fmt.Sprintf("%d %d %d", cmd.Process.Pid, first, theGuard.pid())
	if err := os.WriteFile(filepath.Join(dir, "tmp"), []byte(report), 0o644); err != nil {
		return 2
	}
	os.Rename(filepath.Join(dir, "tmp"), filepath.Join(dir, "ready"))
	select {}
}

// TestReplacedGuardStillKillsOnDeath: a guard killed while its agent lives
// is replaced, the replacement knows the live groups, and it kills them when
// the agent is SIGKILLed.
func TestReplacedGuardStillKillsOnDeath(t *testing.T) {
	dir := t.TempDir()
	child := osexec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+dir)
	var stderr bytes.Buffer
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { child.Wait(); close(exited) }()

	var pids []int
	testutil.Eventually(t, 10*time.Second, func() error {
		select {
		case <-exited:
			t.Fatalf("child exited early: %s", stderr.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join(dir, "ready"))
		if err != nil {
			return err
		}
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			pids = append(pids, pid)
		}
		return nil
	})
	sleepPid, newGuard := pids[0], pids[2]
	t.Cleanup(func() { syscall.Kill(sleepPid, syscall.SIGKILL) })
	if !running(sleepPid) || !running(newGuard) {
		t.Fatalf("sleep %d or new guard %d not running before the kill", sleepPid, newGuard)
	}
	child.Process.Kill()
	<-exited
	testutil.Eventually(t, 10*time.Second, func() error {
		if running(sleepPid) {
			return fmt.Errorf("guarded sleep %d still running after its agent was SIGKILLed", sleepPid)
		}
		if running(newGuard) {
			return fmt.Errorf("guard %d outlived its agent", newGuard)
		}
		return nil
	})
}

// running: pid exists and is not a zombie (nobody may reap orphans in a
// container).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}
