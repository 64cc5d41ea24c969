package relay

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/quartz"
	"github.com/coder/websocket"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// §8.1.1 frames_splice_end_to_end_bidirectionally.
func TestSpliceBidirectional(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	viewer := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	agent.send("hello-tty")
	if f := viewer.nextFrame(); string(f.Data) != "hello-tty" || f.ChannelId != "ch" {
		t.Fatalf("viewer got %v", f)
	}
	viewer.send("keystroke")
	if f := agent.nextFrame(); string(f.Data) != "keystroke" || f.Seq != 0 {
		t.Fatalf("agent got %v", f)
	}
	m := e.srv.Metrics()
	eventually(t, "splice metrics", func() bool {
		return m.BytesAgentToViewer.Load() == 9 && m.BytesViewerToAgent.Load() == 9 &&
			m.FramesSpliced.Load() == 2 && m.OpensAccepted.Load() == 2 && m.LiveChannels.Load() == 1
	})
}

// §8.1.2 a_stale_epoch_viewer_is_rejected (and §10.3: a newer epoch fences older viewers).
func TestStaleEpochViewerRejected(t *testing.T) {
	e := newEnv(t, nil)
	e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	c4 := viewerClaims(4, 7681)
	c4.ViewerID = "viewer-four"
	old := e.mustConnect(keyQuery(7681), viewerOpen(t, c4, 0))
	e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(5, 7681), 0))
	// The epoch-4 viewer already attached is fenced with a reason.
	if c := old.nextClose(); c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED || c.Message != msgStaleEpoch {
		t.Fatalf("fenced viewer got %v", c)
	}
	old.expectEnd()
	p, ack := e.connect(keyQuery(7681), viewerOpen(t, viewerClaims(4, 7681), 0))
	assertRejected(t, ack, msgStaleEpoch)
	p.expectEnd()
	if n := e.srv.Metrics().OpensRejected.Load(); n != 1 {
		t.Fatalf("opens_rejected = %d, want 1", n)
	}
}

// §8.1.3 cross_channel_isolation: 7681 and 6080 of the same agent never mix.
func TestCrossChannelIsolation(t *testing.T) {
	e := newEnv(t, nil)
	agentA := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	agentB := e.mustConnect(keyQuery(6080), agentOpen(t, 6080, 0))
	viewerA := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	viewerB := e.mustConnect(keyQuery(6080), viewerOpen(t, viewerClaims(0, 6080), 0))
	agentA.send("secretA")
	if f := viewerA.nextFrame(); string(f.Data) != "secretA" {
		t.Fatalf("viewer A got %q", f.Data)
	}
	// A leak would have been queued to B before A's copy; B's first frame must be B's marker.
	agentB.send("markerB")
	if f := viewerB.nextFrame(); string(f.Data) != "markerB" {
		t.Fatalf("viewer B got %q: isolation broken", f.Data)
	}
	viewerB.send("inputB")
	if f := agentB.nextFrame(); string(f.Data) != "inputB" {
		t.Fatalf("agent B got %q", f.Data)
	}
	agentA.write(&agentpb.StreamClose{ChannelId: "ch-7681", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL})
	if f := agentA.nextMsgOrEnd(); f.tag != 0 {
		t.Fatalf("agent A got %v after its close", f.tag)
	}
}

// §8.1.4 viewer_reconnect_replays_the_buffered_tail.
func TestViewerReconnectReplaysTail(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v1 := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	for _, d := range []string{"f0", "f1", "f2"} {
		agent.send(d)
	}
	if f := v1.nextFrame(); f.Seq != 0 {
		t.Fatalf("first frame seq %d", f.Seq)
	}
	v1.c.CloseNow()
	eventually(t, "viewer detached", func() bool { return !e.srv.reg.paired(routeKey{ws: testWS, agent: testAgent, port: 7681}) })
	v2 := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 1))
	got := []uint64{v2.nextFrame().Seq, v2.nextFrame().Seq}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("replayed seqs %v, want [1 2]", got)
	}
}

// §8.1.5 rate_limit_sheds_oversized_traffic_and_is_observable.
func TestRateLimitSheds(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.RateBurstBytes, o.RateBytesPerSec = 8, 0 })
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	viewer := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	agent.send("abcd")
	for range 5 {
		agent.send("too-much-traffic")
	}
	eventually(t, "rate_limit_drops >= 1", func() bool { return e.srv.Metrics().RateLimitDrops.Load() >= 1 })
	if f := viewer.nextFrame(); string(f.Data) != "abcd" {
		t.Fatalf("viewer got %q", f.Data)
	}
	// 4 bytes left, refill 0: every 16-byte frame is shed, none arrives.
	eventually(t, "five sheds", func() bool { return e.srv.Metrics().RateLimitDrops.Load() == 5 })
	agent.write(&agentpb.StreamClose{ChannelId: "ch", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, Message: "pty exited"})
	if c := viewer.nextClose(); c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT || c.Message != "pty exited" {
		t.Fatalf("viewer got close %v", c)
	}
}

// §8.1.6 producer_reconnect_resumes_from_its_cursor: a replacing agent
// registration while the old socket is still open.
func TestProducerReconnectReplaces(t *testing.T) {
	e := newEnv(t, nil)
	a1 := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	viewer := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	a1.send("a")
	if f := viewer.nextFrame(); string(f.Data) != "a" {
		t.Fatalf("viewer got %q", f.Data)
	}
	a2 := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 1))
	a2.seq = 1
	// The replaced agent is dropped without a StreamClose (it would end its PTY).
	if err := a1.expectEnd(); websocket.CloseStatus(err) != -1 {
		t.Fatalf("replaced agent saw a close frame: %v", err)
	}
	a2.send("b")
	if f := viewer.nextFrame(); string(f.Data) != "b" || f.Seq != 1 {
		t.Fatalf("viewer got %v", f)
	}
	if n := e.srv.Metrics().Reconnects.Load(); n != 1 {
		t.Fatalf("reconnects = %d", n)
	}
	// The old connection's late detach is generation-safe: input still reaches the new agent.
	viewer.send("still-there")
	if f := a2.nextFrame(); string(f.Data) != "still-there" {
		t.Fatalf("new agent got %q", f.Data)
	}
}

// §8.3 registry: agent first, three frames with no client, then a client with resume 1 gets [1,2];
// viewer first: input is replayed to an agent that attaches later.
func TestReplayBothDirections(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	for _, d := range []string{"p0", "p1", "p2"} {
		agent.send(d)
	}
	eventually(t, "ring holds 3", func() bool { return e.srv.Metrics().BufferHighWater.Load() == 3 })
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 1))
	if a, b := v.nextFrame(), v.nextFrame(); a.Seq != 1 || b.Seq != 2 || string(b.Data) != "p2" {
		t.Fatalf("replay %v %v", a, b)
	}
	// A request beyond the newest frame gets nothing; the next live frame is next.
	v.c.CloseNow()
	v = e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 99))
	agent.send("p3")
	if f := v.nextFrame(); f.Seq != 3 {
		t.Fatalf("after resume 99 got seq %d", f.Seq)
	}
	// Replayed frames are not counted in the byte metrics: only p3 was spliced live.
	if b := e.srv.Metrics().BytesAgentToViewer.Load(); b != 2 {
		t.Fatalf("bytes a→v = %d, want 2", b)
	}

	// Viewer first on another port.
	vw := e.mustConnect(keyQuery(6080), viewerOpen(t, viewerClaims(0, 6080), 0))
	vw.send("k0")
	vw.send("k1")
	eventually(t, "input ringed", func() bool { return e.srv.Metrics().LiveChannels.Load() == 2 })
	ag := e.mustConnect(keyQuery(6080), agentOpen(t, 6080, 0))
	if a, b := ag.nextFrame(), ag.nextFrame(); string(a.Data) != "k0" || string(b.Data) != "k1" || a.Seq != 0 || b.Seq != 1 {
		t.Fatalf("agent replay %v %v", a, b)
	}
}

// §8.3 registry: a client detach, an agent frame, a re-attach with resume 1 replays [1] and pairs again.
func TestDetachReattach(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	agent.send("x0")
	v.nextFrame()
	v.c.CloseNow()
	k := routeKey{ws: testWS, agent: testAgent, port: 7681}
	eventually(t, "detached", func() bool { return !e.srv.reg.paired(k) })
	if e.srv.Metrics().LiveChannels.Load() != 1 {
		t.Fatal("channel must survive one side's detach")
	}
	agent.send("x1")
	v = e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 1))
	if f := v.nextFrame(); f.Seq != 1 || string(f.Data) != "x1" {
		t.Fatalf("replay %v", f)
	}
	if !e.srv.reg.paired(k) {
		t.Fatal("not paired again")
	}
	// Both sides gone: the channel is removed.
	v.c.CloseNow()
	agent.c.CloseNow()
	eventually(t, "channel removed", func() bool { return e.srv.Metrics().LiveChannels.Load() == 0 })
}

// §8.3 registry: close(FENCED) from the agent reaches the viewer and removes the channel.
func TestAgentCloseForwarded(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	agent.write(&agentpb.StreamClose{ChannelId: "ch", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED, Message: "bye"})
	if c := v.nextClose(); c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED || c.Message != "bye" {
		t.Fatalf("close %v", c)
	}
	v.expectEnd()
	eventually(t, "channel removed", func() bool { return e.srv.Metrics().LiveChannels.Load() == 0 })
	if e.srv.reg.paired(routeKey{ws: testWS, agent: testAgent, port: 7681}) {
		t.Fatal("still paired")
	}
}

// DesktopInput passes through unchanged in both directions, without ring or metrics.
func TestDesktopInputForwarded(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(6080), agentOpen(t, 6080, 0))
	v := e.mustConnect(keyQuery(6080), viewerOpen(t, viewerClaims(0, 6080), 0))
	in := &agentpb.DesktopInput{ChannelId: "ch", Event: &agentpb.DesktopInput_Pointer{Pointer: &agentpb.PointerEvent{
		X: 10, Y: 20, Action: agentpb.PointerAction_POINTER_ACTION_CLICK, Button: agentpb.PointerButton_POINTER_BUTTON_LEFT}}}
	v.write(in)
	tag, m := agent.next()
	if tag != frame.TagDesktopInput || m.(*agentpb.DesktopInput).GetPointer().GetX() != 10 {
		t.Fatalf("agent got %v %v", tag, m)
	}
	agent.write(in)
	if tag, _ := v.next(); tag != frame.TagDesktopInput {
		t.Fatalf("viewer got %v", tag)
	}
	if n := e.srv.Metrics().FramesSpliced.Load(); n != 0 {
		t.Fatalf("frames spliced %d", n)
	}
}

// Mid-stream Open/OpenAck and undecodable messages are ignored; text is skipped.
func TestSpliceIgnoresNoise(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	ctx := context.Background()
	agent.c.Write(ctx, websocket.MessageText, []byte("hello"))
	agent.c.Write(ctx, websocket.MessageBinary, []byte{9, 9})
	agent.c.Write(ctx, websocket.MessageBinary, []byte{})
	agent.write(agentOpen(t, 7681, 0))
	agent.write(&agentpb.StreamOpenAck{Accepted: true})
	agent.send("after-noise")
	if f := v.nextFrame(); string(f.Data) != "after-noise" {
		t.Fatalf("viewer got %q", f.Data)
	}
}

func assertRejected(t *testing.T, ack *agentpb.StreamOpenAck, want string) {
	t.Helper()
	if ack.GetAccepted() || ack.GetResumeFromSeq() != 0 {
		t.Fatalf("ack %v, want a rejection", ack)
	}
	e := ack.GetError()
	if e.GetCode() != agentpb.ErrorCode_ERROR_CODE_STREAM || e.GetRetryable() || len(e.GetDetail()) != 0 {
		t.Fatalf("rejection error %v", e)
	}
	if e.GetMessage() != want {
		t.Fatalf("rejection %q, want %q", e.GetMessage(), want)
	}
}

// Every handshake rejection of relay.md §1.4 with its exact text; the socket
// is then dropped without a WebSocket close frame.
func TestHandshakeRejections(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Now()
	mint := func(secret string, c token.ViewerClaims) string {
		tok, err := token.MintViewer(secret, c, now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	open := func(role agentpb.StreamRole, tok string, key *agentpb.StreamChannel) *agentpb.StreamOpen {
		return &agentpb.StreamOpen{Channel: key, Token: tok, Role: role}
	}
	client, agentRole := agentpb.StreamRole_STREAM_ROLE_CLIENT, agentpb.StreamRole_STREAM_ROLE_AGENT
	expired := viewerClaims(0, 7681)
	expired.Exp = now.Unix() - 1
	wrongWS := viewerClaims(0, 7681)
	wrongWS.WorkspaceID = "99999999-9999-4999-8999-999999999999"
	otherAgentTok, _ := token.MintAgent(testSecret, token.AgentClaims{WorkspaceID: testWS, AgentID: "someone-else", Exp: farExp}, now)
	otherKey := chanKey(7681, "ch")
	otherKey.WorkspaceId = "other-ws"

	cases := []struct {
		name  string
		query string
		open  *agentpb.StreamOpen
		want  string
	}{
		{"no channel", keyQuery(7681), &agentpb.StreamOpen{Role: client}, msgNoChannel},
		{"workspace differs from query", keyQuery(7681), open(client, "", otherKey), msgKeyMismatch},
		{"port differs from query", keyQuery(7681), open(client, "", chanKey(6080, "ch")), msgKeyMismatch},
		{"channel differs from pinned query", keyQuery(7681) + "&channel=ch-a", open(client, "", chanKey(7681, "ch-b")), msgKeyMismatch},
		{"unspecified role", keyQuery(7681), open(agentpb.StreamRole_STREAM_ROLE_UNSPECIFIED, "", chanKey(7681, "ch")), msgUnspecifiedRole},
		{"unknown role", keyQuery(7681), open(agentpb.StreamRole(7), "", chanKey(7681, "ch")), msgUnspecifiedRole},
		{"forged viewer token", keyQuery(7681), open(client, mint("not-the-secret", viewerClaims(0, 7681)), chanKey(7681, "ch")), "viewer token: token signature is invalid"},
		{"expired viewer token", keyQuery(7681), open(client, mint(testSecret, expired), chanKey(7681, "ch")), "viewer token: token is expired"},
		{"wrong-workspace viewer token", keyQuery(7681), open(client, mint(testSecret, wrongWS), chanKey(7681, "ch")), msgViewerWorkspace},
		{"wrong-port viewer token", keyQuery(7681), open(client, mint(testSecret, viewerClaims(0, 6080)), chanKey(7681, "ch")), msgViewerPort},
		{"agent token as viewer (wrong role)", keyQuery(7681), open(client, agentToken(t), chanKey(7681, "ch")), "viewer token: token has the wrong prefix"},
		{"viewer token as agent (wrong role)", keyQuery(7681), open(agentRole, mint(testSecret, viewerClaims(0, 7681)), chanKey(7681, "ch")), "agent token: token has the wrong prefix"},
		{"empty agent token", keyQuery(7681), open(agentRole, "", chanKey(7681, "ch")), "agent token: token has the wrong prefix"},
		{"malformed viewer token", keyQuery(7681), open(client, "ogs_no-dot", chanKey(7681, "ch")), "viewer token: token is malformed"},
		{"agent token for another agent", keyQuery(7681), open(agentRole, otherAgentTok, chanKey(7681, "ch")), msgAgentScope},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, ack := e.connect(tc.query, tc.open)
			assertRejected(t, ack, tc.want)
			if err := p.expectEnd(); websocket.CloseStatus(err) != -1 {
				t.Fatalf("relay sent a close frame after a rejection: %v", err)
			}
			if n := e.srv.Metrics().OpensRejected.Load(); n != uint64(i+1) {
				t.Fatalf("opens_rejected = %d, want %d", n, i+1)
			}
		})
	}
	if n := e.srv.Metrics().LiveChannels.Load(); n != 0 {
		t.Fatalf("rejections left %d live channels", n)
	}
}

func TestSecretsNotConfigured(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.StreamTokenSecret, o.RelayTokenSecret = "", "" })
	_, ack := e.connect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	assertRejected(t, ack, msgNoViewerSecret)
	_, ack = e.connect(keyQuery(7681), agentOpen(t, 7681, 0))
	assertRejected(t, ack, msgNoAgentSecret)

	// An empty relay secret falls back to the stream secret.
	e2 := newEnv(t, func(o *Options) { o.RelayTokenSecret = "" })
	e2.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
}

// The first binary message must be a StreamOpen; text before it is skipped.
func TestHandshakeFirstMessage(t *testing.T) {
	e := newEnv(t, nil)
	cases := []struct {
		name string
		send []byte
		want string
	}{
		{"frame first", frame.MustEncode(&agentpb.StreamFrame{Data: []byte("x")}), "expected StreamOpen, got Frame"},
		{"close first", frame.MustEncode(&agentpb.StreamClose{}), "expected StreamOpen, got Close"},
		{"unknown tag", []byte{42, 1, 2}, "undecodable StreamOpen: "},
		{"empty", []byte{}, "undecodable StreamOpen: "},
		{"bad body", []byte{1, 0x0a, 0x09}, "undecodable StreamOpen: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newPeer(t, e.dial(keyQuery(7681)), true)
			if err := p.c.Write(context.Background(), websocket.MessageBinary, tc.send); err != nil {
				t.Fatal(err)
			}
			tag, m := p.next()
			ack, ok := m.(*agentpb.StreamOpenAck)
			if tag != frame.TagOpenAck || !ok || ack.Accepted || !strings.HasPrefix(ack.GetError().GetMessage(), tc.want) {
				t.Fatalf("got %v %v, want rejection %q", tag, m, tc.want)
			}
			p.expectEnd()
		})
	}
	if n := e.srv.Metrics().OpensRejected.Load(); n != 0 {
		t.Fatalf("malformed first messages counted as rejections: %d", n)
	}
	// Text before the open is skipped.
	p := newPeer(t, e.dial(keyQuery(7681)), true)
	p.c.Write(context.Background(), websocket.MessageText, []byte("hi"))
	p.write(agentOpen(t, 7681, 3))
	if _, m := p.next(); !m.(*agentpb.StreamOpenAck).Accepted || m.(*agentpb.StreamOpenAck).ResumeFromSeq != 3 {
		t.Fatalf("ack %v", m)
	}
}

// §10.2: a socket that sends no StreamOpen within the bound is rejected and closed.
func TestHandshakeTimeout(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.HandshakeTimeout = 50 * time.Millisecond })
	p := newPeer(t, e.dial(keyQuery(7681)), true)
	tag, m := p.next()
	if tag != frame.TagOpenAck {
		t.Fatalf("got %v", tag)
	}
	assertRejected(t, m.(*agentpb.StreamOpenAck), msgHandshakeTimeout)
	p.expectEnd()
}

// HTTP surface: routes, methods, query validation, health and metrics.
func TestHTTPSurface(t *testing.T) {
	e := newEnv(t, nil)
	get := func(method, path string) (*http.Response, string) {
		req, _ := http.NewRequest(method, e.http+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if r, body := get("GET", "/healthz"); r.StatusCode != 200 || body != "ok" || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("healthz %d %q", r.StatusCode, body)
	}
	r, body := get("GET", "/metrics")
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "text/plain; version=0.0.4" {
		t.Fatalf("metrics %d %q", r.StatusCode, r.Header.Get("Content-Type"))
	}
	names := []string{"bytes_agent_to_viewer_total", "bytes_viewer_to_agent_total", "frames_spliced_total",
		"opens_accepted_total", "opens_rejected_total", "reconnects_total", "rate_limit_drops_total",
		"buffer_drops_total", "buffer_high_water", "live_channels"}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 30 {
		t.Fatalf("metrics body has %d lines:\n%s", len(lines), body)
	}
	for i, n := range names {
		full := "opengeni_relay_" + n
		if !strings.HasPrefix(lines[3*i], "# HELP "+full+" ") || !strings.HasPrefix(lines[3*i+1], "# TYPE "+full+" ") || lines[3*i+2] != full+" 0" {
			t.Fatalf("metric %d block:\n%s", i, strings.Join(lines[3*i:3*i+3], "\n"))
		}
	}
	for _, tc := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/healthz", 405}, {"PUT", "/metrics", 405}, {"DELETE", "/stream" + keyQuery(1), 405},
		{"GET", "/nope", 404}, {"POST", "/nope", 404}, {"GET", "/", 404},
		{"GET", "/stream?ws=a&agent=b", 400}, {"GET", "/stream?ws=a&port=1", 400}, {"GET", "/stream?agent=a&port=1", 400},
		{"GET", "/stream?ws=a&agent=b&port=x", 400}, {"GET", "/stream?ws=a&agent=b&port=4294967296", 400},
		{"GET", "/stream?ws=a&agent=b&port=-1", 400},
	} {
		if r, _ := get(tc.method, tc.path); r.StatusCode != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, r.StatusCode, tc.code)
		}
	}
	// A valid query without a WebSocket upgrade: a 4xx from the WebSocket layer.
	if r, _ := get("GET", "/stream"+keyQuery(1)+"&extra=ignored"); r.StatusCode < 400 || r.StatusCode > 499 {
		t.Errorf("non-upgrade /stream = %d", r.StatusCode)
	}
	// Percent-encoded values are decoded before the comparison with the open.
	p := e.mustConnect("?ws="+strings.ReplaceAll(testWS, "-", "%2D")+"&agent="+testAgent+"&port=7681&unknown=1", agentOpen(t, 7681, 0))
	p.c.CloseNow()
}

// Next revision: `channel` in the query becomes part of the routing key, so
// two PTYs on one port do not replace each other; and v1 sides pair with
// pinned sides through the channel id they opened with.
func TestChannelRouting(t *testing.T) {
	e := newEnv(t, nil)
	pin := func(id string) string { return keyQuery(7681) + "&channel=" + id }
	open := func(role agentpb.StreamRole, id, tok string) *agentpb.StreamOpen {
		return &agentpb.StreamOpen{Channel: chanKey(7681, id), Token: tok, Role: role}
	}
	agentRole, client := agentpb.StreamRole_STREAM_ROLE_AGENT, agentpb.StreamRole_STREAM_ROLE_CLIENT
	vt := viewerToken(t, viewerClaims(0, 7681))

	a1 := e.mustConnect(pin("pty-1"), open(agentRole, "pty-1", agentToken(t)))
	a2 := e.mustConnect(pin("pty-2"), open(agentRole, "pty-2", agentToken(t)))
	v1 := e.mustConnect(pin("pty-1"), open(client, "pty-1", vt))
	v2 := e.mustConnect(pin("pty-2"), open(client, "pty-2", vt))
	a1.send("one")
	a2.send("two")
	if f := v1.nextFrame(); string(f.Data) != "one" {
		t.Fatalf("v1 got %q", f.Data)
	}
	if f := v2.nextFrame(); string(f.Data) != "two" {
		t.Fatalf("v2 got %q", f.Data)
	}
	if n := e.srv.Metrics().Reconnects.Load(); n != 0 {
		t.Fatalf("pinned channels replaced each other: reconnects=%d", n)
	}

	// A v1 agent (no channel in its query) and a viewer whose URL carries the channel.
	a3 := e.mustConnect(keyQuery(7681), open(agentRole, "pty-3", agentToken(t)))
	v3 := e.mustConnect(pin("pty-3"), open(client, "pty-3", vt))
	a3.send("three")
	if f := v3.nextFrame(); string(f.Data) != "three" {
		t.Fatalf("v3 got %q", f.Data)
	}
	// Viewer first with a pinned URL, then the v1 agent opening with that channel id.
	v4 := e.mustConnect(pin("pty-4"), open(client, "pty-4", vt))
	e.mustConnect(keyQuery(6080), agentOpen(t, 6080, 0)) // unrelated
	a4 := e.mustConnect(keyQuery(7681)+"&channel=", open(agentRole, "pty-4", agentToken(t)))
	a4.send("four")
	if f := v4.nextFrame(); string(f.Data) != "four" {
		t.Fatalf("v4 got %q", f.Data)
	}
	// A v1-query viewer reaches a pinned agent through its open's channel id.
	v5 := e.mustConnect(keyQuery(7681), open(client, "pty-1", vt))
	a1.send("one-more")
	if f := v5.nextFrame(); string(f.Data) != "one" {
		t.Fatalf("v5 replay got %q", f.Data)
	}
}

// §10.3: several viewers see the same output; only the controlling viewer's input reaches the agent.
func TestViewersFanOut(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	ca, cb := viewerClaims(0, 7681), viewerClaims(0, 7681)
	ca.ViewerID, cb.ViewerID = "viewer-a", "viewer-b"
	va := e.mustConnect(keyQuery(7681), viewerOpen(t, ca, 0))
	vb := e.mustConnect(keyQuery(7681), viewerOpen(t, cb, 0))
	for i := range 50 {
		agent.send(fmt.Sprintf("out-%d;", i))
	}
	for _, v := range []*peer{va, vb} {
		var got bytes.Buffer
		for range 50 {
			got.Write(v.nextFrame().Data)
		}
		if want := expectedStream(50); got.String() != want {
			t.Fatalf("viewer got %q", got.String())
		}
	}
	// The newest viewer (b) controls; a's input is ignored.
	va.send("from-a")
	vb.send("from-b")
	if f := agent.nextFrame(); string(f.Data) != "from-b" {
		t.Fatalf("agent got %q from a read-only viewer", f.Data)
	}
	// A control-mode viewer takes control even when older viewers exist... and is the controller while attached.
	cc := viewerClaims(0, 7681)
	cc.ViewerID, cc.Mode = "viewer-c", token.ModeControl
	vc := e.mustConnect(keyQuery(7681), viewerOpen(t, cc, 0))
	cd := viewerClaims(0, 7681)
	cd.ViewerID = "viewer-d"
	vd := e.mustConnect(keyQuery(7681), viewerOpen(t, cd, 0))
	vd.send("from-d")
	vc.send("from-c")
	if f := agent.nextFrame(); string(f.Data) != "from-c" {
		t.Fatalf("agent got %q, want the control-mode viewer's input", f.Data)
	}
	// The same viewer reconnecting replaces its old connection, which is told why.
	va2 := e.mustConnect(keyQuery(7681), viewerOpen(t, ca, 50))
	for {
		tag, m := va.next()
		if tag == frame.TagClose {
			if c := m.(*agentpb.StreamClose); c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED || c.Message != msgReplaced {
				t.Fatalf("replaced viewer close %v", c)
			}
			break
		}
	}
	agent.send("after")
	for _, v := range []*peer{va2, vb, vc, vd} {
		var f *agentpb.StreamFrame
		for f = v.nextFrame(); string(f.Data) != "after"; f = v.nextFrame() {
		}
	}
	// One viewer's StreamClose only detaches it while others watch.
	vb.write(&agentpb.StreamClose{ChannelId: "ch", Reason: agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL})
	vb.expectEnd()
	agent.send("still-live")
	if f := vd.nextFrame(); string(f.Data) != "still-live" {
		t.Fatalf("vd got %q", f.Data)
	}
}

func expectedStream(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "out-%d;", i)
	}
	return b.String()
}

// reaperClock is a quartz mock at the wall time (tokens are minted on wall
// time) for a relay's reaper. start waits for the reaper's ticker and its
// first pass; tick advances one ReapInterval and waits for that pass (a
// tick the reaper has not taken yet would be coalesced with the next).
type reaperClock struct {
	*quartz.Mock
	t     *testing.T
	ctx   context.Context // bounds every wait on the clock
	trap  *quartz.Trap
	every time.Duration
}

func newReaperClock(t *testing.T, every time.Duration) *reaperClock {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	t.Cleanup(cancel)
	clk := quartz.NewMock(t)
	clk.Set(time.Now()).MustWait(ctx)
	return &reaperClock{Mock: clk, t: t, ctx: ctx, trap: clk.Trap().NewTicker("relay", "reap"), every: every}
}

func (c *reaperClock) start(e *env) {
	defer c.trap.Close()
	c.trap.MustWait(c.ctx).MustRelease(c.ctx)
	eventually(c.t, "the reaper's first pass", func() bool { return e.srv.reg.reapCount() >= 1 })
}

func (c *reaperClock) tick(e *env) {
	n := e.srv.reg.reapCount()
	c.Advance(c.every).MustWait(c.ctx)
	eventually(c.t, "a reaper pass", func() bool { return e.srv.reg.reapCount() > n })
}

// §3 half-open reaper: a lone side older than the pair timeout is told why and dropped.
func TestHalfOpenChannelReaped(t *testing.T) {
	clk := newReaperClock(t, time.Second)
	e := newEnv(t, func(o *Options) {
		o.Clock = clk
		o.PairTimeout = 3 * time.Second
		o.ReapInterval = time.Second
	})
	clk.start(e)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	for range 3 { // up to the pair timeout: not yet older than it
		clk.tick(e)
	}
	if n := e.srv.Metrics().LiveChannels.Load(); n != 1 {
		t.Fatalf("live channels at the pair timeout = %d, want 1 (not yet reaped)", n)
	}
	clk.tick(e)
	c := agent.nextClose()
	if c.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR || c.Message != msgReaped || c.ChannelId != "ch-7681" {
		t.Fatalf("reaped close %v", c)
	}
	agent.expectEnd()
	eventually(t, "live_channels 0", func() bool { return e.srv.Metrics().LiveChannels.Load() == 0 })
}

// Paired channels are never reaped, however idle.
func TestPairedChannelNotReaped(t *testing.T) {
	clk := newReaperClock(t, time.Second)
	e := newEnv(t, func(o *Options) { o.Clock = clk; o.ReapInterval = time.Second; o.PairTimeout = 2 * time.Second })
	clk.start(e)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	for range 6 { // three times the pair timeout
		clk.tick(e)
	}
	agent.send("alive")
	if f := v.nextFrame(); string(f.Data) != "alive" {
		t.Fatalf("got %q", f.Data)
	}
}

// releaseCalls releases the next n calls trap catches, from its own
// goroutine; the channel says when they are done (or why not).
func releaseCalls(ctx context.Context, trap *quartz.Trap, n int) <-chan error {
	done := make(chan error, 1)
	go func() {
		for range n {
			call, err := trap.Wait(ctx)
			if err == nil {
				err = call.Release(ctx)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	return done
}

// §10.2 keepalive: a peer that stops answering pings (half-open TCP) is dropped and detached.
func TestHalfOpenSocketDroppedByKeepalive(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	clk := quartz.NewMock(t)
	clk.Set(time.Now()).MustWait(ctx)
	started := clk.Trap().AfterFunc("relay", "keepalive")
	pinging := clk.Trap().AfterFunc("relay", "ping-timeout")
	defer pinging.Close()
	answered := clk.Trap().TimerReset("relay", "keepalive")
	defer answered.Close()
	e := newEnv(t, func(o *Options) {
		o.Clock = clk
		o.ReapInterval = time.Hour
		o.PingInterval = 10 * time.Second
		o.PingTimeout = 5 * time.Second
	})
	startedDone := releaseCalls(ctx, started, 2)                  // the agent and the dead viewer each start a keepalive
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0)) // reads, so it answers pings
	// A viewer that completes the handshake and then never reads: pongs are never sent.
	c := e.dial(keyQuery(7681))
	defer c.CloseNow()
	if err := frame.WriteFrame(context.Background(), c, viewerOpen(t, viewerClaims(0, 7681), 0)); err != nil {
		t.Fatal(err)
	}
	k := routeKey{ws: testWS, agent: testAgent, port: 7681}
	eventually(t, "dead viewer attached", func() bool { return e.srv.reg.paired(k) })
	if err := <-startedDone; err != nil {
		t.Fatal(err)
	}
	started.Close()
	// A trapped call holds the mock's lock until released, so the two pings'
	// deadlines and the agent's rescheduling (its pong came back) are
	// released as they come, in whatever order.
	pinged, rescheduled := releaseCalls(ctx, pinging, 2), releaseCalls(ctx, answered, 1)
	clk.Advance(10 * time.Second) // both are pinged; not waited: the dead viewer's ping never returns
	for _, done := range []<-chan error{pinged, rescheduled} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if !e.srv.reg.paired(k) {
		t.Fatal("the viewer was dropped before its ping timed out")
	}
	clk.Advance(5 * time.Second) // the dead viewer's ping times out
	eventually(t, "dead viewer dropped", func() bool { return !e.srv.reg.paired(k) && e.srv.Metrics().OpensAccepted.Load() == 2 })
	// The live agent answering pings stays attached.
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	agent.send("still")
	if f := v.nextFrame(); string(f.Data) != "still" {
		t.Fatalf("got %q", f.Data)
	}
}

// A viewer that never reads does not stall the producer or the other viewers;
// it is told it fell behind and the fast viewer receives every byte.
func TestSlowViewerDoesNotStallProducer(t *testing.T) {
	const frames, size = 640, 32 << 10 // 20 MiB: more than loopback socket buffers plus the queue
	e := newEnv(t, func(o *Options) {
		o.RateBurstBytes, o.RateBytesPerSec = 1<<40, 1<<40
		o.RingFrames = frames
		o.QueueLen = 32
	})
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	slowClaims := viewerClaims(0, 7681)
	slowClaims.ViewerID = "slow"
	slow := e.dial(keyQuery(7681))
	defer slow.CloseNow()
	if err := frame.WriteFrame(context.Background(), slow, viewerOpen(t, slowClaims, 0)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "slow viewer attached", func() bool { return e.srv.Metrics().OpensAccepted.Load() == 2 })
	fast := newResumingViewer(e, viewerClaims(0, 7681))
	payload := bytes.Repeat([]byte{'x'}, size)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range frames {
			binaryStamp(payload, i)
			if err := frame.WriteFrame(context.Background(), agent.c, &agentpb.StreamFrame{Seq: uint64(i), Data: payload}); err != nil {
				t.Errorf("producer write %d: %v", i, err)
				return
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(waitFor):
		t.Fatal("producer stalled behind a slow viewer")
	}
	got := fast.collect(t, frames)
	for i, f := range got {
		if f.Seq != uint64(i) || len(f.Data) != size || stampOf(f.Data) != i {
			t.Fatalf("frame %d: seq %d len %d stamp %d", i, f.Seq, len(f.Data), stampOf(f.Data))
		}
	}
	eventually(t, "slow viewer shed", func() bool { return e.srv.Metrics().BufferDrops.Load() >= 1 })
}

func binaryStamp(b []byte, i int) { copy(b, fmt.Sprintf("%08d", i)) }
func stampOf(b []byte) int {
	var n int
	fmt.Sscanf(string(b[:8]), "%08d", &n)
	return n
}

// resumingViewer reads a channel losslessly: it drops frames below its cursor
// and, when the relay ends its socket, reconnects with resume_from_seq = cursor.
type resumingViewer struct {
	e        *env
	claims   token.ViewerClaims
	p        *peer
	next     uint64
	resumes  int
	dropConn func(n uint64) bool // test hook: drop the socket after frame n
}

func newResumingViewer(e *env, c token.ViewerClaims) *resumingViewer {
	v := &resumingViewer{e: e, claims: c}
	v.p = e.mustConnect(keyQuery(c.Port), viewerOpen(e.t, c, 0))
	return v
}

func (v *resumingViewer) collect(t *testing.T, n int) []*agentpb.StreamFrame {
	var out []*agentpb.StreamFrame
	for len(out) < n {
		m, ok := v.p.nextMsg(waitFor)
		if !ok {
			t.Fatalf("stalled after %d frames", len(out))
		}
		if m.err != nil && m.tag == 0 || m.tag == frame.TagClose {
			v.resumes++
			v.p.c.CloseNow()
			v.p = v.e.mustConnect(keyQuery(v.claims.Port), viewerOpen(t, v.claims, v.next))
			continue
		}
		f, ok := m.m.(*agentpb.StreamFrame)
		if !ok || f.Seq < v.next {
			continue // a duplicate from the replay: below the cursor
		}
		if f.Seq != v.next {
			t.Fatalf("gap: got seq %d, want %d", f.Seq, v.next)
		}
		v.next++
		out = append(out, f)
		if v.dropConn != nil && v.dropConn(f.Seq) {
			// Drop and resume right here: frames the old reader already
			// buffered must not hide the reconnect from the count.
			v.p.c.CloseNow()
			v.resumes++
			v.p = v.e.mustConnect(keyQuery(v.claims.Port), viewerOpen(t, v.claims, v.next))
		}
	}
	return out
}

// A viewer dropped mid-stream reconnects with resume_from_seq and gets
// exactly the missed frames: every byte of a long stream, once, in order.
func TestViewerResumeLongStreamExact(t *testing.T) {
	const lines = 100000
	e := newEnv(t, func(o *Options) {
		o.RateBurstBytes, o.RateBytesPerSec = 1<<40, 1<<40
		o.RingFrames = 8192
	})
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := newResumingViewer(e, viewerClaims(0, 7681))
	v.dropConn = func(seq uint64) bool { return seq == 100 || seq == 1000 || seq == 2500 }

	// The producer: `seq 1 100000` in chunks of up to 200 bytes, like a PTY pump.
	var want bytes.Buffer
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	var chunks [][]byte
	for b := want.Bytes(); len(b) > 0; {
		n := min(len(b), 100+len(chunks)%101)
		chunks = append(chunks, b[:n])
		b = b[n:]
	}
	go func() {
		for i, c := range chunks {
			if err := frame.WriteFrame(context.Background(), agent.c, &agentpb.StreamFrame{Seq: uint64(i), Data: c}); err != nil {
				return
			}
		}
	}()
	var got bytes.Buffer
	for _, f := range v.collect(t, len(chunks)) {
		got.Write(f.Data)
	}
	if got.Len() != want.Len() || !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("stream differs: got %d bytes, want %d", got.Len(), want.Len())
	}
	if v.resumes < 3 {
		t.Fatalf("only %d resumes", v.resumes)
	}
	if n := strings.Count(got.String(), "\n"); n != lines {
		t.Fatalf("%d lines", n)
	}
}

// §10.1: the relay stamps input toward the agent with one channel-wide
// sequence, so an agent that keeps a receive cursor and presents it on
// reconnect never executes replayed input twice, across agent reconnects
// and viewer reconnects that restart their own numbering.
func TestInputReplayRunsOnce(t *testing.T) {
	e := newEnv(t, nil)
	var ran []string
	var cursor uint64
	// run drains n inputs through a receive cursor, like the agent's PTY writer.
	run := func(a *peer, n int) {
		for done := 0; done < n; {
			f := a.nextFrame()
			if f.Seq < cursor {
				continue
			}
			if f.Seq != cursor {
				t.Fatalf("input gap: seq %d, cursor %d", f.Seq, cursor)
			}
			cursor++
			ran = append(ran, string(f.Data))
			done++
		}
	}
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	for _, k := range []string{"ls\n", "pwd\n", "id\n"} {
		v.send(k)
	}
	run(agent, 3)

	// The agent reconnects (old socket still open) presenting its receive cursor: nothing replays.
	agent2 := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, cursor))
	agent.expectEnd()
	v.send("date\n")
	run(agent2, 1)

	// The agent drops; input typed meanwhile is kept and replayed once.
	agent2.c.CloseNow()
	eventually(t, "agent detached", func() bool { return !e.srv.reg.paired(routeKey{ws: testWS, agent: testAgent, port: 7681}) })
	v.send("uptime\n")
	v.send("whoami\n")
	eventually(t, "input ringed", func() bool { return e.srv.Metrics().BufferHighWater.Load() >= 6 })
	agent3 := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, cursor))
	run(agent3, 2)

	// The viewer reconnects and restarts its own numbering at 0: still executed, once.
	v.c.CloseNow()
	v2 := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	v2.send("echo again\n")
	run(agent3, 1)

	// A fresh agent connection with resume 0 would get the ring again; with the
	// cursor the agent drops all of it.
	agent4 := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v2.send("last\n")
	run(agent4, 1)

	want := []string{"ls\n", "pwd\n", "id\n", "date\n", "uptime\n", "whoami\n", "echo again\n", "last\n"}
	if !slices.Equal(ran, want) {
		t.Fatalf("executed %q, want %q", ran, want)
	}
}

// Graceful shutdown: ListenAndServe returns when ctx ends and sockets are dropped (no StreamClose).
func TestListenAndServeShutdown(t *testing.T) {
	o := TestOptions(testSecret)
	srv, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netListen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, ln) }()
	e := &env{t: t, srv: srv, base: "ws://" + ln.Addr().String() + "/stream"}
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	cancel()
	if err := agent.expectEnd(); websocket.CloseStatus(err) != -1 {
		t.Fatalf("shutdown sent a close frame: %v", err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Serve did not return")
	}
	// A bind failure is reported.
	o.Bind = ln.Addr().String()
	ln2, _ := netListenAt(o.Bind)
	if ln2 != nil {
		defer ln2.Close()
		srv2, _ := New(o, nil)
		defer srv2.Close()
		if err := srv2.ListenAndServe(context.Background()); err == nil {
			t.Fatal("ListenAndServe on a busy port returned nil")
		}
	}
}

// nextMsgOrEnd returns the next message or the end marker (tag 0).
func (p *peer) nextMsgOrEnd() msg {
	m, ok := p.nextMsg(waitFor)
	if !ok {
		p.t.Fatalf("nothing within %v", waitFor)
	}
	return m
}

// Next §9.2: the authority-epoch fence next to the lease-epoch fence; a token
// without authorityEpoch enforces nothing and does not move the floor.
func TestAuthorityEpochFence(t *testing.T) {
	e := newEnv(t, nil)
	e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	with := func(id string, auth uint64) token.ViewerClaims {
		c := viewerClaims(0, 7681)
		c.ViewerID, c.SubjectID, c.AuthorityEpoch = id, "subject-1", auth
		return c
	}
	e.mustConnect(keyQuery(7681), viewerOpen(t, with("a", 5), 0))
	_, ack := e.connect(keyQuery(7681), viewerOpen(t, with("b", 3), 0))
	assertRejected(t, ack, msgStaleEpoch)
	e.mustConnect(keyQuery(7681), viewerOpen(t, with("c", 0), 0)) // no authority claim: not fenced
	e.mustConnect(keyQuery(7681), viewerOpen(t, with("d", 5), 0))
	if n := e.srv.Metrics().OpensRejected.Load(); n != 1 {
		t.Fatalf("opens_rejected = %d", n)
	}
}

// An agent whose receive cursor is ahead of a fresh channel (the relay
// restarted under it) gets the next input stamped from its cursor, so the
// input is not mistaken for a replay.
func TestInputSeqContinuesFromAgentCursor(t *testing.T) {
	e := newEnv(t, nil)
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 41))
	viewer := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	viewer.send("after-restart")
	if f := agent.nextFrame(); string(f.Data) != "after-restart" || f.Seq != 41 {
		t.Fatalf("agent got %v, want seq 41", f)
	}
	viewer.send("next")
	if f := agent.nextFrame(); f.Seq != 42 {
		t.Fatalf("agent got %v, want seq 42", f)
	}
}

// Input typed before the agent (re)attaches to a fresh channel is renumbered
// from the agent's cursor and replayed to it, not filtered out as consumed.
func TestInputBeforeAgentRenumbered(t *testing.T) {
	e := newEnv(t, nil)
	viewer := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	viewer.send("typed-while-away")
	viewer.send("and-more")
	eventually(t, "input ringed", func() bool { return e.srv.Metrics().BufferHighWater.Load() >= 2 })
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 10))
	for i, want := range []string{"typed-while-away", "and-more"} {
		if f := agent.nextFrame(); string(f.Data) != want || f.Seq != uint64(10+i) {
			t.Fatalf("agent got %v, want %q seq %d", f, want, 10+i)
		}
	}
	viewer.send("live")
	if f := agent.nextFrame(); string(f.Data) != "live" || f.Seq != 12 {
		t.Fatalf("agent got %v, want live seq 12", f)
	}
}
