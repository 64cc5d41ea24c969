//go:build unix

package pty

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// fakeClock is the idle clock of a Service under test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// gone reports whether pid has exited (a zombie waiting for its reaper counts).
func gone(pid int) bool {
	if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	var pid int
	streamtest.Eventually(t, "pid file "+path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && strings.HasSuffix(string(b), "\n")
	})
	return pid
}

// Input of any kind (pty_write, pty_resize, a viewer keystroke) keeps a
// terminal alive; IdleTimeout after the last one it is closed, and
// pty_close still reports how it ended.
func TestIdleTimeoutCountsFromTheLastInput(t *testing.T) {
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	h := newHarness(t, func(o *Options) { o.IdleTimeout = 10 * time.Minute; o.Now = clock.Now })
	ctx := context.Background()
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh"}})
	v := h.viewer(resp)
	v.WaitContains("$ ")

	steps := []struct {
		name  string
		input func()
	}{
		{"pty_write", func() {
			if _, err := h.svc.Write(ctx, &agentpb.PtyWriteRequest{PtyId: resp.PtyId, Data: []byte("echo w-$((1+1))\r")}); err != nil {
				t.Fatal(err)
			}
			v.WaitContains("w-2")
		}},
		{"pty_resize", func() {
			if _, err := h.svc.Resize(ctx, &agentpb.PtyResizeRequest{PtyId: resp.PtyId, Cols: 90, Rows: 20}); err != nil {
				t.Fatal(err)
			}
		}},
		{"viewer keystrokes", func() {
			v.Send("echo k-$((2+2))\r")
			v.WaitContains("k-4") // the shell read it, so the agent saw the input
		}},
	}
	for _, s := range steps {
		clock.Advance(9 * time.Minute)
		s.input()
		clock.Advance(9 * time.Minute) // 18 minutes since the previous input, 9 since this one
		if n := h.svc.reapIdle(ctx); n != 0 {
			t.Fatalf("after %s: %d terminals reaped 9 minutes after input", s.name, n)
		}
	}
	clock.Advance(time.Minute)
	if n := h.svc.reapIdle(ctx); n != 1 {
		t.Fatalf("reaped %d terminals after 10 idle minutes, want 1", n)
	}
	streamtest.Eventually(t, "StreamClose after the idle close", func() bool { return len(v.Closes()) == 1 })
	if h.svc.Live() != 0 {
		t.Fatalf("live = %d after the idle close", h.svc.Live())
	}
	c, err := h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: resp.PtyId})
	if err != nil || c.ExitCode != 128+int32(unix.SIGHUP) {
		t.Fatalf("pty_close after the idle close: %v %v", c, err)
	}
}

// End to end with the real reaper: a forgotten terminal whose job ignores
// the hang-up is closed and its whole process group killed.
func TestIdleTerminalIsClosedWithItsProcessGroup(t *testing.T) {
	h := newHarness(t, func(o *Options) {
		o.IdleTimeout = 200 * time.Millisecond
		o.HangupGrace = 200 * time.Millisecond
	})
	bg := filepath.Join(h.dir, "bg")
	// The shell dies on SIGHUP; its job ignores it (and would outlive it).
	script := `sh -c 'trap "" HUP; exec sleep 1000' & echo $! > ` + bg + `; echo started; wait`
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", script}})
	v := h.viewer(resp)
	v.WaitContains("started")
	job := readPid(t, bg)
	streamtest.Eventually(t, "the idle terminal is closed", func() bool { return len(v.Closes()) == 1 })
	streamtest.Eventually(t, "the job that ignored SIGHUP is killed", func() bool { return gone(job) })
	if h.svc.Live() != 0 {
		t.Fatalf("live = %d", h.svc.Live())
	}
}

// Beyond MaxLive running terminals pty_open is refused with a typed error;
// a terminal whose program exited frees its place.
func TestLiveTerminalCap(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.MaxLive = 2 })
	ctx := context.Background()
	a := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", "echo a; read x"}})
	h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", "echo b; read x"}})
	_, err := h.svc.Open(ctx, &agentpb.PtyOpenRequest{Command: []string{"/bin/sh"}})
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_OS || pe.GetDetail()["reason"] != "pty_limit" ||
		pe.GetDetail()["limit"] != "2" || !strings.Contains(pe.GetMessage(), "too many terminals") {
		t.Fatalf("third open: %v", pe)
	}
	// The first program exits: its place is free although pty_close was not called.
	if _, err := h.svc.Write(ctx, &agentpb.PtyWriteRequest{PtyId: a.PtyId, Data: []byte("\r")}); err != nil {
		t.Fatal(err)
	}
	streamtest.Eventually(t, "the first terminal's program exited", func() bool { return h.svc.Live() == 1 })
	c := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", "echo c; read x"}})
	if _, err := h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: c.PtyId}); err != nil {
		t.Fatal(err)
	}
	if h.svc.Live() != 1 {
		t.Fatalf("live = %d after closing one of two", h.svc.Live())
	}
}

// The relay refuses the channel between its registration and the first
// output frame (its token was revoked): pty_open answers with that refusal,
// not with a TIMEOUT after ReadyTimeout.
func TestOpenReportsARefusedFirstFlush(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.NudgeAfter = -1 })
	d := h.relay.Dialer()
	good := d.Token
	var dials atomic.Int64
	d.TokenFunc = func() string {
		if dials.Add(1) == 1 {
			return good
		}
		return "ogr_revoked"
	}
	d.CloseGrace = 100 * time.Millisecond // the refused channel's StreamClose cannot be delivered either
	h.svc.opts.Streams = d
	h.svc.opts.ReadyTimeout = time.Hour // a timeout would hang the test, never pass it
	goFile := filepath.Join(h.dir, "go")
	// Silent until told: the first output comes after the registration is lost.
	script := `while [ ! -e ` + goFile + ` ]; do sleep 0.02; done; echo first-output; sleep 1000`
	errc := make(chan error, 1)
	go func() {
		_, err := h.svc.Open(context.Background(), &agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", script}})
		errc <- err
	}()
	streamtest.Eventually(t, "the channel registered", func() bool { return h.svc.Len() == 1 })
	h.relay.Restart() // drops the registration; re-registering presents the revoked token
	var sess *session
	h.svc.mu.Lock()
	for _, ss := range h.svc.sessions {
		sess = ss
	}
	h.svc.mu.Unlock()
	// Once the loss is seen, the first output cannot ship before a re-registration.
	streamtest.Eventually(t, "the channel saw its registration go", func() bool { return sess.ch.LastError() != nil })
	if err := os.WriteFile(goFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-errc:
	case <-time.After(streamtest.Deadline):
		t.Fatal("pty_open did not answer")
	}
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_STREAM || !strings.Contains(pe.GetMessage(), "rejected") {
		t.Fatalf("pty_open = %v, want the relay's refusal as STREAM", pe)
	}
	streamtest.Eventually(t, "the refused terminal is gone", func() bool { return h.svc.Len() == 0 && h.svc.Live() == 0 })
}

// A relay that refuses the registration itself: STREAM with its reason, at
// once, and nothing left running.
func TestOpenReportsARefusedRegistration(t *testing.T) {
	h := newHarness(t)
	d := h.relay.Dialer()
	d.Token = "ogr_revoked"
	h.svc.opts.Streams = d
	h.svc.opts.ReadyTimeout = time.Hour // a timeout would hang the test, never pass it
	_, err := h.svc.Open(context.Background(), &agentpb.PtyOpenRequest{Command: []string{"/bin/sh"}})
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_STREAM || !strings.Contains(pe.GetMessage(), "rejected") || pe.GetRetryable() {
		t.Fatalf("pty_open = %v, want the relay's refusal as STREAM", pe)
	}
	streamtest.Eventually(t, "nothing left running", func() bool { return h.svc.Len() == 0 && h.svc.Live() == 0 })
}
