//go:build unix

package pty

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// harness is a real relay, a pty Service dialing it and helpers.
type harness struct {
	t     testing.TB
	relay *streamtest.Relay
	svc   *Service
	dir   string
}

func newHarness(t testing.TB, mutate ...func(*Options)) *harness {
	t.Helper()
	r := streamtest.StartRelay(t, nil)
	dir := t.TempDir()
	opts := Options{
		Streams: r.Dialer(),
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Root:    workspace.Root{Dir: dir},
		// A predictable shell and prompt, whatever the host has.
		Env: func() []string {
			return append(os.Environ(), "SHELL=/bin/sh", "PS1=$ ", "ENV=", "HOME="+dir)
		},
	}
	for _, m := range mutate {
		m(&opts)
	}
	svc := New(opts)
	t.Cleanup(func() { svc.Shutdown(context.Background()) })
	return &harness{t: t, relay: r, svc: svc, dir: dir}
}

func (h *harness) open(req *agentpb.PtyOpenRequest) *agentpb.PtyOpenResponse {
	h.t.Helper()
	resp, err := h.svc.Open(context.Background(), req)
	if err != nil {
		h.t.Fatalf("pty_open: %v", err)
	}
	if resp.PtyId == "" || resp.PtyId != resp.Channel.GetChannelId() {
		h.t.Fatalf("pty_open response %v", resp)
	}
	return resp
}

func (h *harness) viewer(resp *agentpb.PtyOpenResponse) *streamtest.Viewer {
	v := streamtest.NewViewer(h.t, h.relay, resp.Channel)
	v.Connect()
	return v
}

func code(err error) agentpb.ErrorCode { return agenterr.ToProto(err).GetCode() }

func TestUnsupportedWithoutRelay(t *testing.T) {
	svc := New(Options{})
	ctx := context.Background()
	_, err := svc.Open(ctx, &agentpb.PtyOpenRequest{})
	if code(err) != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || !strings.Contains(err.Error(), "pty_open: no relay stream registrar is wired") {
		t.Fatalf("open: %v", err)
	}
	if _, err := svc.Write(ctx, &agentpb.PtyWriteRequest{PtyId: "x"}); code(err) != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("write: %v", err)
	}
	if _, err := svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: "x"}); code(err) != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("close: %v", err)
	}
}

func TestUnknownPtyIsNotFound(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	_, err1 := h.svc.Write(ctx, &agentpb.PtyWriteRequest{PtyId: "nope", Data: []byte("x")})
	_, err2 := h.svc.Resize(ctx, &agentpb.PtyResizeRequest{PtyId: "nope", Cols: 1, Rows: 1})
	_, err3 := h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: "nope"})
	for _, err := range []error{err1, err2, err3} {
		pe := agenterr.ToProto(err)
		if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND || pe.GetMessage() != "no open pty: nope" {
			t.Fatalf("got %v", pe)
		}
	}
}

func TestSpawnMissingCommand(t *testing.T) {
	h := newHarness(t)
	_, err := h.svc.Open(context.Background(), &agentpb.PtyOpenRequest{Command: []string{"no-such-command-xyz"}})
	if err == nil || !strings.Contains(err.Error(), "pty spawn no-such-command-xyz") {
		t.Fatalf("err = %v", err)
	}
	if h.svc.Len() != 0 {
		t.Fatal("a failed open left a session")
	}
}

// The default login shell, in the requested cwd, with TERM and env; a
// command typed by the viewer runs once and its output arrives.
func TestViewerCommandRunsOnce(t *testing.T) {
	h := newHarness(t)
	sub := filepath.Join(h.dir, "sub")
	os.Mkdir(sub, 0o755)
	resp := h.open(&agentpb.PtyOpenRequest{Cwd: "sub", Env: map[string]string{"GREETING": "hi", "TERM": "ignored"}})
	v := h.viewer(resp)
	v.WaitOutput("a prompt", func(out []byte) bool { return len(out) > 0 })
	v.Send(`echo run >> count; echo "[$((6*7))|$GREETING|$TERM|$(pwd)|$0]"` + "\r")
	out := v.WaitContains("|" + sub + "|")
	if !bytes.Contains(out, []byte("[42|hi|xterm-256color|"+sub+"|/bin/sh]")) {
		t.Fatalf("output: %q", out)
	}
	b, err := os.ReadFile(filepath.Join(sub, "count"))
	if err != nil || string(b) != "run\n" {
		t.Fatalf("count file %q %v: the command did not run exactly once", b, err)
	}
}

func TestCwdFallsBackToHome(t *testing.T) {
	h := newHarness(t)
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", "pwd; exec cat"}, Cwd: "/does/not/exist"})
	v := h.viewer(resp)
	home, _ := os.UserHomeDir()
	v.WaitContains(home + "\r\n")
}

// The relay is restarted while `seq 1 100000` streams; the viewer had read
// only part of it and the rest in flight dies with the relay. Both sides
// reconnect to the fresh relay and every byte arrives exactly once; the
// terminal survives and keeps taking input.
func TestRelayRestartMidSession(t *testing.T) {
	h := newHarness(t)
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh"}})
	v := h.viewer(resp)
	v.WaitContains("$ ")
	v.StopAfter(func(out []byte) bool { return bytes.Contains(out, []byte("\r\n20000\r\n")) })
	v.Send("printf 'BEGIN\\n'; seq 1 100000; printf 'END\\n'\r")
	streamtest.Eventually(t, "the viewer saw line 20000", v.Stopped)
	h.relay.Restart()
	v.Connect()
	out := v.WaitContains("END\r\n")

	var want bytes.Buffer
	want.WriteString("BEGIN\r\n")
	for i := 1; i <= 100000; i++ {
		fmt.Fprintf(&want, "%d\r\n", i)
	}
	want.WriteString("END\r\n")
	i := bytes.Index(out, []byte("BEGIN\r\n"))
	j := bytes.Index(out, []byte("END\r\n"))
	if i < 0 || j < i {
		t.Fatalf("markers missing")
	}
	got := out[i : j+len("END\r\n")]
	if !bytes.Equal(got, want.Bytes()) {
		k := 0
		for k < len(got) && k < want.Len() && got[k] == want.Bytes()[k] {
			k++
		}
		t.Fatalf("output differs at byte %d of %d (got %d): %q", k, want.Len(), len(got), got[max(0, k-20):min(len(got), k+20)])
	}
	if g := v.Gaps(); len(g) > 0 {
		t.Fatalf("gaps: %v", g)
	}
	sess, _ := h.svc.lookup(resp.PtyId)
	if s := sess.ch.Stats(); s.Reconnects == 0 {
		t.Fatalf("the agent did not reconnect: %+v", s)
	}

	// The terminal survived the relay restart.
	v.Send("echo alive-$((40+2))\r")
	v.WaitContains("alive-42")
}

func TestWriteAndResize(t *testing.T) {
	h := newHarness(t)
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh"}, Cols: 100, Rows: 30})
	v := h.viewer(resp)
	v.WaitContains("$ ")
	ctx := context.Background()
	write := func(s string) {
		t.Helper()
		w, err := h.svc.Write(ctx, &agentpb.PtyWriteRequest{PtyId: resp.PtyId, Data: []byte(s)})
		if err != nil || w.BytesWritten != uint64(len(s)) {
			t.Fatalf("pty_write: %v %v", w, err)
		}
	}
	write("echo size=$(stty size)\r")
	v.WaitContains("size=30 100")
	if _, err := h.svc.Resize(ctx, &agentpb.PtyResizeRequest{PtyId: resp.PtyId, Cols: 120, Rows: 40}); err != nil {
		t.Fatal(err)
	}
	write("echo size=$(stty size)\r")
	v.WaitContains("size=40 120")
	if _, err := h.svc.Resize(ctx, &agentpb.PtyResizeRequest{PtyId: resp.PtyId, Cols: 70000, Rows: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	write("echo size=$(stty size)\r")
	v.WaitContains("size=65535 65535")
}

func TestCloseReturnsExitCode(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()

	// A running program: pty_close hangs up, the program's own exit code comes back.
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", `trap 'exit 3' HUP; echo ready; while :; do sleep 1; done`}})
	v := h.viewer(resp)
	v.WaitContains("ready")
	c, err := h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: resp.PtyId})
	if err != nil || c.ExitCode != 3 {
		t.Fatalf("pty_close: %v %v", c, err)
	}
	streamtest.Eventually(t, "StreamClose PROCESS_EXIT", func() bool {
		cl := v.Closes()
		return len(cl) == 1 && cl[0].Reason == agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT && cl[0].Message == "pty exited"
	})
	if _, err := h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: resp.PtyId}); code(err) != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND {
		t.Fatalf("second close: %v", err)
	}

	// An exited program: its exit code is kept for pty_close, its last
	// output reaches the viewer before the close.
	resp = h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", "echo ready; read x; echo bye; exit 7"}})
	v = h.viewer(resp)
	v.WaitContains("ready")
	v.Send("\r")
	v.WaitContains("bye")
	streamtest.Eventually(t, "exit", func() bool { return len(v.Closes()) == 1 })
	c, err = h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: resp.PtyId})
	if err != nil || c.ExitCode != 7 {
		t.Fatalf("pty_close: %v %v", c, err)
	}

	// A program that ignores SIGHUP is killed.
	resp = h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", `trap '' HUP; echo ready; while :; do sleep 1; done`}})
	h.viewer(resp).WaitContains("ready")
	c, err = h.svc.Close(ctx, &agentpb.PtyCloseRequest{PtyId: resp.PtyId})
	if err != nil || c.ExitCode != 128+9 {
		t.Fatalf("pty_close: %v %v", c, err)
	}
}

// A silent program still becomes ready (the nudge's echo ships a frame).
func TestSilentProgramBecomesReady(t *testing.T) {
	h := newHarness(t)
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"sleep", "30"}})
	if _, err := h.svc.Close(context.Background(), &agentpb.PtyCloseRequest{PtyId: resp.PtyId}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTimesOutWhenRelayIsDown(t *testing.T) {
	h := newHarness(t)
	h.relay.Stop()
	h.svc.opts.ReadyTimeout = 300 * 1e6
	_, err := h.svc.Open(context.Background(), &agentpb.PtyOpenRequest{Command: []string{"/bin/sh"}})
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_TIMEOUT || !pe.GetRetryable() {
		t.Fatalf("got %v", pe)
	}
	if h.svc.Len() != 0 {
		t.Fatal("session left behind")
	}
}
