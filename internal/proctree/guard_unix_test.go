//go:build unix

package proctree

import (
	"bytes"
	"encoding/binary"
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
	_, releasedDone := startGroup(t) // not in the table
	// A table as the agent writes it: a freed slot, junk, and the init
	// process that must never be signalled.
	var table []byte
	for _, pgid := range []int32{int32(kept.Process.Pid), 0, 1, -5} {
		table = binary.NativeEndian.AppendUint32(table, uint32(pgid))
	}
	// EOF at once: the agent is gone.
	if code := runGuard(strings.NewReader(""), bytes.NewReader(table)); code != 0 {
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
		if _, err := startGuarded(cmd); err == nil {
			cmd.Wait()
			t.Errorf("startGuarded with %+v: no error, want one (the group could not be killed alone)", attr)
		}
	}
}
