package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/quartz"
	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

func TestDialURL(t *testing.T) {
	key := &agentpb.StreamChannel{ChannelId: "ch-1-2", WorkspaceId: "ws-1", AgentId: "ag-1", Port: 7681}
	if got, want := stream.DialURL("wss://r/stream", key), "wss://r/stream?ws=ws-1&agent=ag-1&port=7681&channel=ch-1-2"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got, want := stream.DialURL("wss://r/stream?x=1", key), "wss://r/stream?x=1&ws=ws-1&agent=ag-1&port=7681&channel=ch-1-2"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	key.WorkspaceId = "a b&c"
	if got := stream.DialURL("ws://r/s", key); got != "ws://r/s?ws=a+b%26c&agent=ag-1&port=7681&channel=ch-1-2" {
		t.Errorf("escaping: %q", got)
	}
}

func TestChannelIDFormat(t *testing.T) {
	re := regexp.MustCompile(`^ch-[0-9a-f]+-[0-9a-f]+$`)
	a, b := stream.NewChannelID(), stream.NewChannelID()
	if !re.MatchString(a) || a == b {
		t.Fatalf("ids %q %q", a, b)
	}
}

func open(t *testing.T, d *stream.Dialer) *stream.Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), streamtest.Deadline)
	defer cancel()
	ch, err := d.Open(ctx, agentpb.StreamKind_STREAM_KIND_PTY, stream.PortPTY)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, "test done") })
	return ch
}

func send(t *testing.T, ch *stream.Channel, s string) {
	t.Helper()
	if err := ch.Send(context.Background(), []byte(s)); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func recv(t *testing.T, ch *stream.Channel) string {
	t.Helper()
	select {
	case b, ok := <-ch.Recv():
		if !ok {
			t.Fatal("recv: channel ended")
		}
		return string(b)
	case <-time.After(streamtest.Deadline):
		t.Fatal("recv: timed out")
	}
	return ""
}

func TestOpenWithoutRelayIsNotConfigured(t *testing.T) {
	_, err := (&stream.Dialer{}).Open(context.Background(), agentpb.StreamKind_STREAM_KIND_PTY, stream.PortPTY)
	if !errors.Is(err, stream.ErrNotConfigured) {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenRejectedIsTerminal(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	d := r.Dialer()
	d.Token = "ogr_forged.sig"
	_, err := d.Open(context.Background(), agentpb.StreamKind_STREAM_KIND_PTY, stream.PortPTY)
	var rej *stream.RejectedError
	if !errors.As(err, &rej) || rej.Message != "agent token: token signature is invalid" {
		t.Fatalf("err = %v", err)
	}
}

func TestOpenRetriesUntilTheRelayIsUp(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	r.Stop()
	d := r.Dialer()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), streamtest.Deadline)
		defer cancel()
		ch, err := d.Open(ctx, agentpb.StreamKind_STREAM_KIND_PTY, stream.PortPTY)
		if err == nil {
			ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, "")
		}
		done <- err
	}()
	r.Restart()
	if err := <-done; err != nil {
		t.Fatalf("open: %v", err)
	}
}

func TestFramesSpliceBothWays(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	ch := open(t, r.Dialer())
	if d := ch.Descriptor(); d.Port != stream.PortPTY || d.Kind != agentpb.StreamKind_STREAM_KIND_PTY ||
		d.WorkspaceId != streamtest.Workspace || d.AgentId != streamtest.Agent || d.ChannelId != ch.ID() {
		t.Fatalf("descriptor %v", d)
	}
	send(t, ch, "hello-tty")
	if err := ch.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect() // late viewer: the relay ring replays the agent's output
	v.WaitContains("hello-tty")
	v.Send("keystroke")
	if got := recv(t, ch); got != "keystroke" {
		t.Fatalf("agent got %q", got)
	}
}

// The relay dies mid-stream; frames the viewer had not read die with it.
// Both sides reconnect to a fresh relay (empty rings) on the same address:
// the agent's replay buffer refills the ring, the viewer resumes at its
// cursor, and the output is exact: nothing lost, nothing repeated.
func TestRelayRestartLosesNothingAndRepeatsNothing(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	ch := open(t, r.Dialer())
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect()

	const n = 20000
	var want bytes.Buffer
	for i := range n {
		fmt.Fprintf(&want, "%d\n", i)
	}
	v.StopAfter(func(out []byte) bool { return bytes.Contains(out, []byte("\n5000\n")) })
	produced := make(chan error, 1)
	go func() {
		// 100 lines a frame: 200 frames, within the relay's per-viewer queue.
		var b []byte
		for i := range n {
			b = append(strconv.AppendInt(b, int64(i), 10), '\n')
			if (i+1)%100 == 0 {
				if err := ch.Send(context.Background(), b); err != nil {
					produced <- err
					return
				}
				b = b[:0]
			}
		}
		produced <- nil
	}()
	streamtest.Eventually(t, "viewer saw line 5000", v.Stopped)
	r.Restart()
	v.Connect()
	if err := <-produced; err != nil {
		t.Fatal(err)
	}
	v.WaitOutput("all lines", func(out []byte) bool { return len(out) >= want.Len() })
	if got := v.Output(); !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("output differs: got %d bytes, want %d", len(got), want.Len())
	}
	if g := v.Gaps(); len(g) > 0 {
		t.Fatalf("gaps: %v", g)
	}
	if s := ch.Stats(); s.Reconnects == 0 || s.Resent == 0 {
		t.Fatalf("expected a reconnect with resent frames: %+v", s)
	}

	// Input after the restart arrives exactly once (the fresh relay restarts
	// its input sequence; the agent rebases its receive cursor).
	v.Send("after-restart")
	if got := recv(t, ch); got != "after-restart" {
		t.Fatalf("agent got %q", got)
	}
}

// Input typed while the agent is away is replayed by the relay from the
// agent's receive cursor: each keystroke runs once.
func TestAgentReconnectReplaysInputOnce(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	ch := open(t, r.Dialer())
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect()
	send(t, ch, "prompt$ ")
	v.WaitContains("prompt$ ")
	for i := range 3 {
		v.Send(fmt.Sprintf("k%d", i))
	}
	for i := range 3 {
		if got := recv(t, ch); got != fmt.Sprintf("k%d", i) {
			t.Fatalf("got %q", got)
		}
	}
	// A viewer detach (StreamClose NORMAL) removes the relay channel; the
	// agent re-registers and the next viewer still finds the output.
	v.SendClose(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL)
	streamtest.Eventually(t, "agent re-registered", func() bool { return ch.Stats().Reconnects >= 1 && ch.Stats().Connected })
	v2 := streamtest.NewViewer(t, r, ch.Descriptor())
	v2.Connect()
	v2.WaitContains("prompt$ ")
	v2.Send("k3")
	if got := recv(t, ch); got != "k3" {
		t.Fatalf("got %q", got)
	}
	select {
	case b := <-ch.Recv():
		t.Fatalf("unexpected extra input %q", b)
	default:
	}
}

func TestCloseDeliversQueuedFramesThenReason(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	ch := open(t, r.Dialer())
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect()
	for i := range 100 {
		send(t, ch, fmt.Sprintf("[%d]", i))
	}
	if err := ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, "pty exited"); err != nil {
		t.Fatalf("close: %v", err)
	}
	v.WaitContains("[99]")
	streamtest.Eventually(t, "StreamClose at the viewer", func() bool { return len(v.Closes()) == 1 })
	cl := v.Closes()[0]
	if cl.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT || cl.Message != "pty exited" || cl.ChannelId != ch.ID() {
		t.Fatalf("close %v", cl)
	}
	if err := ch.Send(context.Background(), []byte("x")); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, ok := <-ch.Recv(); ok {
		t.Fatal("recv not closed")
	}
}

func TestSendBackpressureWhileRelayIsDown(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	d := r.Dialer()
	d.SendQueue = 4
	d.CloseGrace = 50 * time.Millisecond
	ch := open(t, d)
	r.Stop()
	streamtest.Eventually(t, "agent disconnected", func() bool { return !ch.Stats().Connected })
	// With no relay, Send fills the bounded queue and then blocks.
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err = ch.Send(ctx, []byte("x"))
		cancel()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("send never blocked: %v", err)
	}
	// The queued frames reach the relay once it is back.
	r.Restart()
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect()
	v.WaitOutput("queued frames", func(out []byte) bool { return len(out) >= 4 })
}

func TestCloseGivesUpAfterGraceWhenRelayIsGone(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	d := r.Dialer()
	d.CloseGrace = 100 * time.Millisecond
	ch := open(t, d)
	r.Stop()
	streamtest.Eventually(t, "agent disconnected", func() bool { return !ch.Stats().Connected })
	if err := ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, "pty exited"); err == nil {
		t.Fatal("close reported delivery with no relay")
	}
	select {
	case <-ch.Done():
	default:
		t.Fatal("not done after Close")
	}
}

// A relay's reaper closes a lone agent's channel with TRANSPORT_ERROR; the
// agent re-registers instead of ending. The relay's clock is a mock: the
// reaper runs only when the test moves it past the pair timeout.
func TestReapedChannelReRegisters(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), streamtest.Deadline)
	defer cancel()
	clk := quartz.NewMock(t)
	clk.Set(time.Now()).MustWait(ctx)
	reaper := clk.Trap().NewTicker("relay", "reap")
	r := streamtest.StartRelay(t, func(o *relay.Options) {
		o.Clock = clk
		o.PairTimeout = 2 * time.Second
		o.ReapInterval = time.Second
	})
	reaper.MustWait(ctx).MustRelease(ctx)
	reaper.Close()
	ch := open(t, r.Dialer())
	for range 3 { // past the pair timeout: the lone agent is reaped
		clk.Advance(time.Second).MustWait(ctx)
	}
	streamtest.Eventually(t, "re-registration after reaping", func() bool { return ch.Stats().Reconnects >= 1 })
	send(t, ch, "still-here")
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect()
	v.WaitContains("still-here")
}

// The channel pings the relay every PingInterval on its clock. A relay that
// answers keeps the connection; one that does not (below) is dropped when
// the ping's deadline, one interval later, passes.
func TestKeepaliveKeepsAnAnsweringRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), streamtest.Deadline)
	defer cancel()
	r := streamtest.StartRelay(t, nil)
	clk := quartz.NewMock(t)
	clk.Set(time.Now()).MustWait(ctx)
	pings := clk.Trap().NewTicker("stream", "ping")
	defer pings.Close()
	timeouts := clk.Trap().AfterFunc("stream", "ping-timeout")
	defer timeouts.Close()
	d := r.Dialer()
	d.Clock = clk
	d.PingInterval = time.Minute
	ch := open(t, d)
	pings.MustWait(ctx).MustRelease(ctx)

	// The relay answers: the ping's deadline is stopped, nothing is lost.
	clk.Advance(time.Minute).MustWait(ctx)
	timeouts.MustWait(ctx).MustRelease(ctx)
	send(t, ch, "answered")
	if err := ch.Flush(ctx); err != nil || ch.LastError() != nil || ch.Stats().Reconnects != 0 {
		t.Fatalf("after an answered ping: flush %v, last error %v, reconnects %d", err, ch.LastError(), ch.Stats().Reconnects)
	}

}

// halfOpenRelay accepts every open and then never reads again, so pings
// are never answered (a relay behind a dead TCP path).
func halfOpenRelay(t *testing.T) string {
	stop := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if _, _, err := frame.ReadFrame(r.Context(), ws); err != nil {
			return
		}
		if frame.WriteFrame(r.Context(), ws, &agentpb.StreamOpenAck{Accepted: true}) != nil {
			return
		}
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(stop) }) // first: a hijacked socket outlives hs.Close
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/stream"
}

func TestKeepaliveDropsAHalfOpenRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), streamtest.Deadline)
	defer cancel()
	clk := quartz.NewMock(t)
	pings := clk.Trap().NewTicker("stream", "ping")
	defer pings.Close()
	timeouts := clk.Trap().AfterFunc("stream", "ping-timeout")
	defer timeouts.Close()
	d := &stream.Dialer{RelayURL: halfOpenRelay(t), Token: "ogr_any", WorkspaceID: streamtest.Workspace, AgentID: streamtest.Agent,
		Clock: clk, PingInterval: time.Minute, CloseGrace: time.Millisecond}
	ch := open(t, d)
	pings.MustWait(ctx).MustRelease(ctx)
	clk.Advance(time.Minute).MustWait(ctx)
	call := timeouts.MustWait(ctx)
	if call.Duration != time.Minute {
		t.Fatalf("ping deadline %v, want the ping interval", call.Duration)
	}
	call.MustRelease(ctx)
	if ch.LastError() != nil {
		t.Fatalf("dropped before the ping deadline: %v", ch.LastError())
	}
	clk.Advance(time.Minute) // the pong never came: the deadline passes
	// The failed ping closes the socket; its reader may report the loss first.
	streamtest.Eventually(t, "the half-open relay dropped", func() bool { return ch.LastError() != nil })
}

func TestDesktopInputReachesTheAgent(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	d := r.Dialer()
	ctx, cancel := context.WithTimeout(context.Background(), streamtest.Deadline)
	defer cancel()
	ch, err := d.Open(ctx, agentpb.StreamKind_STREAM_KIND_DESKTOP, stream.PortDesktop)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, "desktop closed")
	v := streamtest.NewViewer(t, r, ch.Descriptor())
	v.Connect()
	click := &agentpb.PointerEvent{X: 10, Y: 20, Action: agentpb.PointerAction_POINTER_ACTION_CLICK, Button: agentpb.PointerButton_POINTER_BUTTON_LEFT}
	v.SendMessage(&agentpb.DesktopInput{ChannelId: ch.ID(), Event: &agentpb.DesktopInput_Pointer{Pointer: click}})
	select {
	case in := <-ch.Input():
		if p := in.GetPointer(); p.GetX() != 10 || p.GetY() != 20 || p.GetAction() != click.Action {
			t.Fatalf("got %v", in)
		}
	case <-ctx.Done():
		t.Fatal("no desktop input")
	}
}
