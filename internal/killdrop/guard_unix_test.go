//go:build unix

package killdrop

import (
	"fmt"
	osexec "os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startGroup starts sleep 600 leading its own process group; the channel
// is closed once it has ended.
func startGroup(t *testing.T) (*osexec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := osexec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, done
}

func TestRunGuardKillsLiveGroupsAtEOF(t *testing.T) {
	kept, keptDone := startGroup(t)
	released, releasedDone := startGroup(t)
	in := fmt.Sprintf("+%d\n+%d\n-%d\n+junk\n?\n+1\n", kept.Process.Pid, released.Process.Pid, released.Process.Pid)
	// EOF after the lines is the agent dying.
	if code := runGuard(strings.NewReader(in)); code != 0 {
		t.Fatalf("runGuard = %d", code)
	}
	select {
	case <-keptDone:
	case <-time.After(10 * time.Second):
		t.Fatal("registered group still running after the guard saw EOF")
	}
	select {
	case <-releasedDone:
		t.Fatal("released group was killed")
	default:
	}
}

func TestStartRequiresOwnGroup(t *testing.T) {
	for _, attr := range []*syscall.SysProcAttr{nil, {}, {Setpgid: true, Pgid: 1}} {
		cmd := osexec.Command("true")
		cmd.SysProcAttr = attr
		if _, err := Start(cmd); err == nil {
			cmd.Wait()
			t.Errorf("Start with %+v: no error, want one (the group could not be killed alone)", attr)
		}
	}
}
