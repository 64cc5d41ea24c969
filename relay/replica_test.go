package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// replicaEnv is a relay replica on the shared NATS server ns.
func replicaEnv(t testing.TB, ns *server.Server, mut func(*Options)) *env {
	t.Helper()
	nc := natstest.Connect(t, ns)
	return newEnv(t, func(o *Options) {
		o.NATS = nc
		if mut != nil {
			mut(o)
		}
	})
}

const (
	otherWS    = "55555555-5555-4555-8555-555555555555"
	otherAgent = "66666666-6666-4666-8666-666666666666"
)

// The victim channel Y: workspace otherWS, its agent on replica a.
func victimOpen(t testing.TB) (string, *agentpb.StreamOpen) {
	tok, err := token.MintAgent(testSecret, token.AgentClaims{WorkspaceID: otherWS, AgentID: otherAgent, Exp: farExp}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key := &agentpb.StreamChannel{ChannelId: "ch-y", WorkspaceId: otherWS, AgentId: otherAgent, Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: 7681}
	q := fmt.Sprintf("?ws=%s&agent=%s&port=7681&channel=ch-y", otherWS, otherAgent)
	return q, &agentpb.StreamOpen{Channel: key, Token: tok, Role: agentpb.StreamRole_STREAM_ROLE_AGENT}
}

// A viewer holding a token for channel X (workspace testWS) on replica B
// cannot reach channel Y (another workspace, homed on A) through the NATS
// routing: not with NATS wildcards or subject text in its dial query, and
// not with forged NATS messages on Y's subjects (a request carrying X's
// token, a request naming Y with X's token, input on Y's up subject).
func TestReplicaRoutingCannotBeSteeredToAnotherChannel(t *testing.T) {
	ns := natstest.Start(t)
	a, b := replicaEnv(t, ns, nil), replicaEnv(t, ns, nil)
	yq, yOpen := victimOpen(t)
	yAgent := a.mustConnect(yq, yOpen)
	yAgent.send("secret-Y")

	// The control: Y's own viewer on B does get Y through NATS.
	yViewerTok, err := token.MintViewer(testSecret, token.ViewerClaims{WorkspaceID: otherWS, SessionID: testSess, ViewerID: testViewer,
		Mode: token.ModeControl, Port: 7681, Exp: farExp}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	yViewer := b.mustConnect(yq, &agentpb.StreamOpen{Channel: yOpen.Channel, Token: yViewerTok, Role: agentpb.StreamRole_STREAM_ROLE_CLIENT})
	if f := yViewer.nextFrame(); string(f.Data) != "secret-Y" {
		t.Fatalf("Y's viewer got %q", f.Data)
	}
	accepted := a.srv.Metrics().OpensAccepted.Load() // Y's agent and viewer

	// 1. Subject text and wildcards in the dial query (X's token is
	// workspace-wide: any agent id of testWS is its to ask for).
	xTok := viewerToken(t, token.ViewerClaims{WorkspaceID: testWS, SessionID: testSess, ViewerID: testViewer,
		Mode: token.ModeControl, Port: 7681, Exp: farExp})
	for _, agentID := range []string{"*", ">", otherAgent, otherAgent + ".*", "a.ch." + keyToken(routeKey{ws: otherWS, agent: otherAgent, port: 7681, channel: "ch-y"}) + ".attach"} {
		for _, ch := range []string{"", "ch-y", "*", ">"} {
			key := &agentpb.StreamChannel{ChannelId: ch, WorkspaceId: testWS, AgentId: agentID, Port: 7681}
			q := "?ws=" + testWS + "&agent=" + url.QueryEscape(agentID) + "&port=7681"
			if ch != "" {
				q += "&channel=" + url.QueryEscape(ch)
			}
			p, ack := b.connect(q, &agentpb.StreamOpen{Channel: key, Token: xTok, Role: agentpb.StreamRole_STREAM_ROLE_CLIENT})
			if ack.GetAccepted() {
				p.send("pwned") // must not reach Y's agent
			}
		}
	}
	if got := a.srv.Metrics().OpensAccepted.Load(); got != accepted {
		t.Fatalf("Y's home accepted %d more opens after the attack", got-accepted)
	}

	// 2. Forged NATS messages from a client holding the relay's permissions.
	nc := natstest.Connect(t, ns)
	yTok := keyToken(routeKey{ws: otherWS, agent: otherAgent, port: 7681, channel: "ch-y"})
	xOpen := frame.MustEncode(&agentpb.StreamOpen{Channel: &agentpb.StreamChannel{ChannelId: "ch-x", WorkspaceId: testWS, AgentId: testAgent, Port: 7681},
		Token: xTok, Role: agentpb.StreamRole_STREAM_ROLE_CLIENT})
	rid, sid := newID(), newID()
	down, err := nc.SubscribeSync(subjectPrefix + ".r." + rid + ".>")
	if err != nil {
		t.Fatal(err)
	}
	forged := []struct {
		name string
		req  attachRequest
	}{
		{"X's key and token on Y's subject", attachRequest{WS: testWS, Agent: testAgent, Port: 7681, Channel: "ch-x", Open: xOpen, Replica: rid, Session: sid}},
		{"Y's key with X's token", attachRequest{WS: otherWS, Agent: otherAgent, Port: 7681, Channel: "ch-y", Open: frame.MustEncode(&agentpb.StreamOpen{
			Channel: yOpen.Channel, Token: xTok, Role: agentpb.StreamRole_STREAM_ROLE_CLIENT}), Replica: rid, Session: sid}},
		{"Y's key, an agent open with no token", attachRequest{WS: otherWS, Agent: otherAgent, Port: 7681, Channel: "ch-y", Open: frame.MustEncode(&agentpb.StreamOpen{
			Channel: yOpen.Channel, Role: agentpb.StreamRole_STREAM_ROLE_AGENT}), Replica: rid, Session: sid}},
		{"a session id with subject text", attachRequest{WS: otherWS, Agent: otherAgent, Port: 7681, Channel: "ch-y", Open: xOpen, Replica: rid, Session: "x.>"}},
	}
	for _, f := range forged {
		body, _ := json.Marshal(f.req)
		m, err := nc.Request(chanSubject(yTok, "attach"), body, waitFor)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		var rep attachReply
		if err := json.Unmarshal(m.Data, &rep); err != nil || rep.Accepted {
			t.Fatalf("%s: reply %s, want a refusal", f.name, m.Data)
		}
	}
	// Input forged onto Y's up subject under an unknown session.
	up := append([]byte{linkMsg}, sid...)
	up = binary.BigEndian.AppendUint64(up, 0)
	up = append(up, frame.MustEncode(&agentpb.StreamFrame{ChannelId: "ch-y", Data: []byte("pwned")})...)
	if err := nc.Publish(chanSubject(yTok, "up"), up); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// The sentinel: Y's real viewer types after every attack above; what
	// Y's agent receives first is that, never "pwned".
	yViewer.send("sentinel")
	if f := yAgent.nextFrame(); string(f.Data) != "sentinel" {
		t.Fatalf("Y's agent got %q before the sentinel", f.Data)
	}
	if got := a.srv.Metrics().OpensAccepted.Load(); got != accepted {
		t.Fatalf("Y's home accepted %d forged opens", got-accepted)
	}
	if m, err := down.NextMsg(0); err == nil {
		t.Fatalf("the forger's session got %q", m.Data)
	}
}

// Frames larger than the NATS max payload cross replicas in chunks, intact.
func TestReplicaLinkCarriesFramesLargerThanTheNATSMaxPayload(t *testing.T) {
	ns := natstest.Start(t, natstest.MaxPayload(16<<10))
	a, b := replicaEnv(t, ns, nil), replicaEnv(t, ns, nil)
	ag := a.mustConnect(keyQuery(6080), agentOpen(t, 6080, 0))
	v := b.mustConnect(keyQuery(6080), viewerOpen(t, viewerClaims(0, 6080), 0))
	big := make([]byte, 100<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	ag.send(string(big))
	ag.send("small")
	if f := v.nextFrame(); string(f.Data) != string(big) || f.Seq != 0 {
		t.Fatalf("big frame: seq %d, %d bytes, equal %v", f.Seq, len(f.Data), string(f.Data) == string(big))
	}
	if f := v.nextFrame(); string(f.Data) != "small" || f.Seq != 1 {
		t.Fatalf("then %q seq %d", f.Data, f.Seq)
	}
	if b.srv.Metrics().OpensAccepted.Load() != 0 {
		t.Fatal("the viewer must have been proxied to A")
	}
}

// A message lost on the NATS hop is a gap the link seq reports: the viewer
// is told to resume (TRANSPORT_ERROR) instead of silently missing bytes.
func TestReplicaLinkGapEndsTheViewerForAResume(t *testing.T) {
	ns := natstest.Start(t)
	a, b := replicaEnv(t, ns, nil), replicaEnv(t, ns, nil)
	ag := a.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := b.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	ag.send("f0")
	if f := v.nextFrame(); string(f.Data) != "f0" {
		t.Fatalf("got %q", f.Data)
	}
	// Skip one link seq on the home's side, as a dropped NATS message would.
	a.srv.cl.mu.Lock()
	if len(a.srv.cl.remotes) != 1 {
		t.Fatalf("%d remote sides on the home", len(a.srv.cl.remotes))
	}
	for _, e := range a.srv.cl.remotes {
		e.q.mu.Lock()
		e.downSeq++ // the drainer is idle (queue empty): no one else touches it
		e.q.mu.Unlock()
	}
	a.srv.cl.mu.Unlock()
	ag.send("f1")
	cl := v.nextClose()
	if cl.GetReason() != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR || cl.GetMessage() != msgFellBehind {
		t.Fatalf("close %v %q", cl.GetReason(), cl.GetMessage())
	}
	v.expectEnd()
	// The resume gets f1 from the home's ring.
	v2 := b.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 1))
	if f := v2.nextFrame(); string(f.Data) != "f1" || f.Seq != 1 {
		t.Fatalf("resume got %q seq %d", f.Data, f.Seq)
	}
}

// Two homes for one key (both sides arrived at once on different replicas)
// settle on the older one: the younger's sides are moved there.
func TestReplicaContestedHomeMovesToTheOlder(t *testing.T) {
	ns := natstest.Start(t)
	a, b := replicaEnv(t, ns, nil), replicaEnv(t, ns, nil)
	ag := a.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	// A rival home for the same key on B, as a lost race would leave it
	// (its claim is younger than A's).
	rival := &attachReq{key: routeKey{ws: testWS, agent: testAgent, port: 7681}, channelID: "ch-7681",
		role: agentpb.StreamRole_STREAM_ROLE_CLIENT, viewer: ptr(viewerClaims(0, 7681)), q: newOutq(8)}
	at, rej := b.srv.reg.attach(rival)
	if rej != nil || !at.created {
		t.Fatalf("rival attach: %+v %v", rej, at.created)
	}
	rival.q.resume(func() {}) // the test reads the queue itself
	b.srv.cl.makeHome(at.ch)
	eventually(t, "the younger home to give up its channel", func() bool {
		rival.q.mu.Lock()
		defer rival.q.mu.Unlock()
		return rival.q.finished
	})
	items, _, _ := rival.q.take(nil)
	if len(items) != 1 {
		t.Fatalf("rival viewer got %d messages, want its close", len(items))
	}
	_, m, _ := frame.Decode(items[0])
	if c := m.(*agentpb.StreamClose); c.GetReason() != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR || c.GetMessage() != msgMoved {
		t.Fatalf("close %v", c)
	}
	// A's channel is untouched: a viewer on B now reaches it.
	v := b.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	ag.send("hi")
	if f := v.nextFrame(); string(f.Data) != "hi" {
		t.Fatalf("got %q", f.Data)
	}
}

func ptr[T any](v T) *T { return &v }

// Replicas work with exactly ReplicaNATSPermissions, and a NATS user
// without them (an agent's, say) cannot publish onto the relay's subjects.
func TestReplicasNeedOnlyTheirNATSPermissions(t *testing.T) {
	const inbox = "_INBOX_relay"
	pub, sub := ReplicaNATSPermissions(inbox)
	ns := natstest.Start(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "relay", Password: "r", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: pub}, Subscribe: &server.SubjectPermission{Allow: sub}}},
			{Username: "agent", Password: "a", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{"agent.>"}}, Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>"}}}},
		}
	})
	relayUser := func(o *Options) {
		o.NATS = natstest.Connect(t, ns, nats.UserInfo("relay", "r"), nats.CustomInboxPrefix(inbox))
	}
	a, b := newEnv(t, relayUser), newEnv(t, relayUser)
	ag := a.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	v := b.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))
	ag.send("through least privilege")
	if f := v.nextFrame(); string(f.Data) != "through least privilege" {
		t.Fatalf("got %q", f.Data)
	}
	if b.srv.Metrics().OpensAccepted.Load() != 0 {
		t.Fatal("the viewer must have been proxied")
	}

	denied := make(chan error, 1)
	other := natstest.Connect(t, ns, nats.UserInfo("agent", "a"), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case denied <- err:
		default:
		}
	}))
	other.Publish(chanSubject(keyToken(routeKey{ws: testWS, agent: testAgent, port: 7681}), "up"), []byte("x"))
	other.Flush()
	select {
	case err := <-denied:
		if !errors.Is(err, nats.ErrPermissionViolation) && !strings.Contains(err.Error(), "Permissions Violation") {
			t.Fatalf("error %v, want a permissions violation", err)
		}
	case <-time.After(waitFor):
		t.Fatal("a non-relay user published onto a relay subject")
	}
}

// Viewer first: the viewer's replica becomes the home and the agent, on
// another replica, is the proxied side; input typed before the agent came
// is replayed to it, and an agent re-registering on the home's replica
// replaces the proxied one (which is dropped, not told to close).
func TestReplicaViewerFirstProxiesTheAgent(t *testing.T) {
	ns := natstest.Start(t)
	a, b := replicaEnv(t, ns, nil), replicaEnv(t, ns, nil)
	claims := viewerClaims(0, 7681)
	claims.Mode = token.ModeControl
	v := b.mustConnect(keyQuery(7681), viewerOpen(t, claims, 0))
	v.send("early")
	ag := a.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	if f := ag.nextFrame(); string(f.Data) != "early" || f.Seq != 0 {
		t.Fatalf("agent got %q seq %d", f.Data, f.Seq)
	}
	if a.srv.Metrics().OpensAccepted.Load() != 0 {
		t.Fatal("the agent must have been proxied to the viewer's replica")
	}
	ag.send("out")
	if f := v.nextFrame(); string(f.Data) != "out" {
		t.Fatalf("viewer got %q", f.Data)
	}
	v.send("typed")
	if f := ag.nextFrame(); string(f.Data) != "typed" || f.Seq != 1 {
		t.Fatalf("agent got %q seq %d", f.Data, f.Seq)
	}

	ag2 := b.mustConnect(keyQuery(7681), agentOpen(t, 7681, 2))
	if m, ok := ag.nextMsg(waitFor); !ok || m.err == nil {
		t.Fatalf("the replaced proxied agent got %v, want its socket dropped", m)
	}
	v.send("to the new agent")
	if f := ag2.nextFrame(); string(f.Data) != "to the new agent" || f.Seq != 2 {
		t.Fatalf("new agent got %q seq %d", f.Data, f.Seq)
	}
	ag2.send("from the new agent")
	if f := v.nextFrame(); string(f.Data) != "from the new agent" {
		t.Fatalf("viewer got %q", f.Data)
	}
}
