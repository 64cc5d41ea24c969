package control

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/quartz"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay"
)

// A viewer of a channel no producer ever joins (its close was lost, e.g. in
// a relay restart) is reaped by the relay again and again; once no output
// has come for ReconnectFor it ends with the relay's close instead of
// reconnecting forever (`relay ctl shell` would never return).
func TestViewerEndsWhenNoProducerComes(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	clk := quartz.NewMock(t) // one clock for the relay's reaper and the viewer
	clk.Set(time.Now()).MustWait(ctx)
	reaper := clk.Trap().NewTicker("relay", "reap")
	o := relay.TestOptions("right")
	o.Clock = clk
	o.PairTimeout = 2 * time.Second
	o.ReapInterval = time.Second
	srv, err := relay.New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	reaper.MustWait(ctx).MustRelease(ctx)
	reaper.Close()
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ch := &agentpb.StreamChannel{ChannelId: "ch-1", WorkspaceId: "w1", AgentId: "a1", Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: 7681}
	v, err := DialStream(ctx, ViewerOptions{
		URL:     "ws" + strings.TrimPrefix(hs.URL, "http") + "/stream?ws=w1&agent=a1&port=7681&channel=ch-1",
		Channel: ch,
		Token: func(context.Context) (string, error) {
			tok, _, err := MintViewerToken([]byte("right"), StreamTokenClaims{WorkspaceID: "w1", Port: 7681}, 0)
			return tok, err
		},
		ReconnectFor: 10 * time.Second,
		Clock:        clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	// Time moves only here: from timer to timer (the reaper's ticks, the
	// viewer's reconnect backoff) until the viewer gives up.
	start := clk.Now()
	for done := false; !done; {
		_, w := clk.AdvanceNext()
		w.MustWait(ctx)
		select {
		case <-v.Done():
			done = true
		case <-ctx.Done():
			t.Fatalf("the viewer still waits for a producer (connects %d)", v.Stats().Connects)
		case <-time.After(time.Millisecond): // let the relay and the viewer take the tick
		}
	}
	if waited := clk.Since(start); waited < 10*time.Second {
		t.Fatalf("the viewer gave up after %v on its clock, before ReconnectFor", waited)
	}
	if v.Stats().Connects < 2 {
		t.Fatalf("connects = %d, want reconnects after reaping", v.Stats().Connects)
	}
	var closed *StreamClosedError
	if err := v.Err(); !errors.As(err, &closed) || closed.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR {
		t.Fatalf("err = %v, want the relay's reaping close", err)
	}
	if _, ok := <-v.Output(); ok {
		t.Fatal("output still open")
	}
}
