package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// `relay ctl shell -- echo hi`: the command exits, and the agent closes its
// channel with PROCESS_EXIT, before the viewer reaches the relay. The late
// viewer must still get the output and the end of the stream (it used to
// wait forever on an empty channel), and pty_close the exit code.
func TestTerminalViewerAttachesAfterExit(t *testing.T) {
	e := newTermEnv(t)
	r, err := e.sess.PtyOpen(ctxT(t), control.PtyOptions{Command: []string{"/bin/sh", "-c", "echo hi; exit 3"}})
	if err != nil {
		t.Fatalf("pty_open: %v", err)
	}
	// pty_open answered once the first output reached the relay; the
	// channel leaving the relay means the agent's close went through.
	streamtest.Eventually(t, "the agent's close at the relay", func() bool {
		return e.relay.Server().Metrics().LiveChannels.Load() == 0
	})

	term, err := e.sess.AttachTerminal(ctxT(t), r.GetPtyId(), r.GetChannel(),
		control.TerminalOptions{StreamSecret: []byte(relayStreamSecret)})
	if err != nil {
		t.Fatalf("attach after the exit: %v", err)
	}
	t.Cleanup(term.Detach)
	scr := watch(term.Output())
	select {
	case <-scr.ended:
	case <-time.After(20 * time.Second):
		t.Fatalf("the late viewer's output never closed; got %q", scr.bytes())
	}
	if out := string(scr.bytes()); !strings.Contains(out, "hi") {
		t.Fatalf("late viewer output %q, want the command's \"hi\"", out)
	}
	var closed *control.StreamClosedError
	if err := term.Stream.Err(); !errors.As(err, &closed) || closed.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT {
		t.Fatalf("stream end = %v, want PROCESS_EXIT", err)
	}
	code, err := term.Close(ctxT(t))
	if err != nil || code != 3 {
		t.Fatalf("pty_close = %d, %v; want 3", code, err)
	}
}
