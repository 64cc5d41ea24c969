package instancelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestAcquireSucceedsAndRecordsPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locks", "c.lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	b, _ := os.ReadFile(path)
	if string(b) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q, want own pid %d", b, os.Getpid())
	}
	if pid, ok := HolderPID(path); !ok || pid != os.Getpid() {
		t.Fatalf("HolderPID = %d, %v", pid, ok)
	}
}

func TestSecondAcquireWhileHeldContends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	_, err = Acquire(path)
	var ce *ContendedError
	if !errors.As(err, &ce) || !errors.Is(err, ErrContended) {
		t.Fatalf("second Acquire = %v, want ContendedError", err)
	}
	if ce.HolderPID != os.Getpid() || ce.Holder() != "pid "+strconv.Itoa(os.Getpid()) {
		t.Fatalf("holder %d (%s)", ce.HolderPID, ce.Holder())
	}
	// The contender must not have clobbered the holder's pid.
	if b, _ := os.ReadFile(path); string(b) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("pid clobbered: %q", b)
	}
}

func TestLockIsReleasedOnRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.lock")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Fatal("second Release:", err)
	}
	if _, ok := HolderPID(path); ok {
		t.Fatal("released lock still names a holder")
	}
	l2, err := Acquire(path)
	if err != nil {
		t.Fatal("re-acquire:", err)
	}
	l2.Release()
}

func TestUnparsablePIDIsUnknown(t *testing.T) {
	ce := &ContendedError{Path: "x"}
	if ce.Holder() != "pid unknown" {
		t.Fatal(ce.Holder())
	}
}

// TestContentionAcrossProcesses: a child process holds the lock; this
// process sees contention naming the child's pid, and acquires once the
// child exits (the OS drops the lock with the process).
func TestContentionAcrossProcesses(t *testing.T) {
	if os.Getenv("INSTANCELOCK_CHILD") != "" {
		return
	}
	path := filepath.Join(t.TempDir(), "c.lock")
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldLock$")
	cmd.Env = append(os.Environ(), "INSTANCELOCK_CHILD="+path)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	_, err = Acquire(path)
	var ce *ContendedError
	if !errors.As(err, &ce) || ce.HolderPID != cmd.Process.Pid {
		t.Fatalf("Acquire = %v, want contention by child pid %d", err, cmd.Process.Pid)
	}
	stdin.Close() // child exits without releasing
	_ = cmd.Wait()
	l, err := Acquire(path)
	if err != nil {
		t.Fatal("acquire after holder died:", err)
	}
	l.Release()
}

func TestHelperHoldLock(t *testing.T) {
	path := os.Getenv("INSTANCELOCK_CHILD")
	if path == "" {
		t.Skip("helper process")
	}
	if _, err := Acquire(path); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	os.Exit(0)
}
