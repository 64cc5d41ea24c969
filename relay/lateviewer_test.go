package relay

import (
	"sync/atomic"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// A viewer that attaches after the producer closed (a command that exits
// before `relay ctl shell` reaches the relay) gets the output it missed and
// the producer's StreamClose, then the socket ends: it never waits on an
// empty channel for a producer that is gone.
func TestLateViewerGetsProducerClose(t *testing.T) {
	agentRole, client := agentpb.StreamRole_STREAM_ROLE_AGENT, agentpb.StreamRole_STREAM_ROLE_CLIENT
	pin := func(id string) string { return keyQuery(7681) + "&channel=" + id }
	tests := []struct {
		name                    string
		agentQuery, viewerQuery string
	}{
		{"pinned agent, pinned viewer", pin("pty-1"), pin("pty-1")},
		{"v1 agent, pinned viewer", keyQuery(7681), pin("pty-1")},
		{"v1 agent, v1 viewer", keyQuery(7681), keyQuery(7681)},
		{"pinned agent, v1 viewer", pin("pty-1"), keyQuery(7681)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			vt := viewerToken(t, viewerClaims(2, 7681))
			agent := e.mustConnect(tt.agentQuery, &agentpb.StreamOpen{Channel: chanKey(7681, "pty-1"), Token: agentToken(t), Role: agentRole})
			agent.send("hi\r\n")
			agent.send("bye\r\n")
			agent.write(&agentpb.StreamClose{ChannelId: "pty-1", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, Message: "pty exited"})
			agent.expectEnd()
			eventually(t, "the channel removed", func() bool { return e.srv.Metrics().LiveChannels.Load() == 0 })

			// Two late viewers: the close is kept, not consumed by the first.
			for range 2 {
				v := e.mustConnect(tt.viewerQuery, &agentpb.StreamOpen{Channel: chanKey(7681, "pty-1"), Token: vt, Role: client})
				for _, want := range []string{"hi\r\n", "bye\r\n"} {
					if f := v.nextFrame(); string(f.Data) != want {
						t.Fatalf("replay %q, want %q", f.Data, want)
					}
				}
				if c := v.nextClose(); c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT || c.Message != "pty exited" {
					t.Fatalf("close %v", c)
				}
				v.expectEnd()
			}
			if n := e.srv.Metrics().LiveChannels.Load(); n != 0 {
				t.Fatalf("a late viewer created a live channel: live_channels=%d", n)
			}
		})
	}
}

// The retained close keeps the epoch fence: a viewer older than the floor
// the ended channel had is still refused.
func TestLateViewerEpochFence(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(5, 7681), 0))
	agent.write(&agentpb.StreamClose{ChannelId: "ch-7681", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, Message: "pty exited"})
	v.nextClose()
	v.expectEnd()

	_, ack := e.connect(keyQuery(7681), viewerOpen(t, viewerClaims(4, 7681), 0))
	if ack.GetAccepted() || ack.GetError().GetMessage() != msgStaleEpoch {
		t.Fatalf("stale late viewer: ack %v", ack)
	}
	late := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(5, 7681), 0))
	if c := late.nextClose(); c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT {
		t.Fatalf("close %v", c)
	}
}

// The close is kept for CloseRetention only, and a new producer on the key
// supersedes it at once.
func TestEndedChannelBounded(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Unix(1_700_000_000, 0).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	closeAgent := func(e *env) {
		t.Helper()
		a := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
		a.write(&agentpb.StreamClose{ChannelId: "ch-7681", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, Message: "pty exited"})
		a.expectEnd()
		eventually(t, "the close retained", func() bool { return e.srv.reg.endedLen() == 1 })
	}

	t.Run("expired", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.Now = now; o.CloseRetention = time.Minute })
		closeAgent(e)
		clock.Add(int64(time.Minute + time.Second))
		// Past the retention the open is an ordinary first viewer.
		e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
		if n := e.srv.Metrics().LiveChannels.Load(); n != 1 {
			t.Fatalf("live_channels %d, want the viewer's fresh channel", n)
		}
		if n := e.srv.reg.endedLen(); n != 0 {
			t.Fatalf("%d ended channels kept past the retention", n)
		}
	})
	t.Run("reaped", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.Now = now; o.CloseRetention = time.Minute })
		closeAgent(e)
		clock.Add(int64(time.Minute + time.Second))
		e.srv.reg.reap(now())
		if n := e.srv.reg.endedLen(); n != 0 {
			t.Fatalf("%d ended channels kept past the retention", n)
		}
	})
	t.Run("new producer", func(t *testing.T) {
		e := newEnv(t, nil)
		closeAgent(e)
		a := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
		v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
		a.send("fresh")
		if f := v.nextFrame(); string(f.Data) != "fresh" {
			t.Fatalf("viewer got %q from the new producer", f.Data)
		}
	})
}
