package relay

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/testutil"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// The reference e2e fixture ids (relay.md §8.1).
const (
	testSecret = "relay-e2e-secret"
	testWS     = "11111111-1111-4111-8111-111111111111"
	testAgent  = "44444444-4444-4444-8444-444444444444"
	testSess   = "22222222-2222-4222-8222-222222222222"
	testViewer = "33333333-3333-4333-8333-333333333333"
	farExp     = 4102444800
)

const waitFor = 10 * time.Second // failure deadline for every poll

// env is a real relay on 127.0.0.1.
type env struct {
	t    testing.TB
	srv  *Server
	base string // ws://127.0.0.1:<p>/stream
	http string // http://127.0.0.1:<p>
}

func newEnv(t testing.TB, mut func(*Options)) *env {
	t.Helper()
	o := TestOptions(testSecret)
	if mut != nil {
		mut(&o)
	}
	srv, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	return &env{t: t, srv: srv, base: "ws" + strings.TrimPrefix(ts.URL, "http") + "/stream", http: ts.URL}
}

func keyQuery(port uint32) string {
	return fmt.Sprintf("?ws=%s&agent=%s&port=%d", testWS, testAgent, port)
}

func agentToken(t testing.TB) string {
	tok, err := token.MintAgent(testSecret, token.AgentClaims{WorkspaceID: testWS, AgentID: testAgent, Exp: farExp}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func viewerClaims(epoch uint64, port uint32) token.ViewerClaims {
	return token.ViewerClaims{WorkspaceID: testWS, SessionID: testSess, ViewerID: testViewer,
		LeaseEpoch: epoch, Mode: token.ModeView, Port: port, Exp: farExp}
}

func viewerToken(t testing.TB, c token.ViewerClaims) string {
	tok, err := token.MintViewer(testSecret, c, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func chanKey(port uint32, id string) *agentpb.StreamChannel {
	return &agentpb.StreamChannel{ChannelId: id, WorkspaceId: testWS, AgentId: testAgent,
		Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: port}
}

func agentOpen(t testing.TB, port uint32, resume uint64) *agentpb.StreamOpen {
	return &agentpb.StreamOpen{Channel: chanKey(port, fmt.Sprintf("ch-%d", port)), Token: agentToken(t),
		Role: agentpb.StreamRole_STREAM_ROLE_AGENT, ResumeFromSeq: resume}
}

func viewerOpen(t testing.TB, c token.ViewerClaims, resume uint64) *agentpb.StreamOpen {
	return &agentpb.StreamOpen{Channel: chanKey(c.Port, fmt.Sprintf("ch-%d", c.Port)), Token: viewerToken(t, c),
		Role: agentpb.StreamRole_STREAM_ROLE_CLIENT, ResumeFromSeq: resume}
}

// msg is one message a peer received.
type msg struct {
	tag frame.Tag
	m   proto.Message
	err error // set on the last item: the socket ended
}

// peer is a test agent or viewer speaking the wire format over a real
// WebSocket. A goroutine reads everything into an unbounded inbox, so the
// peer never looks slow to the relay.
type peer struct {
	t      testing.TB
	c      *websocket.Conn
	mu     sync.Mutex
	inbox  []msg
	wake   chan struct{}
	closed chan struct{}
	seq    uint64 // next seq to send
}

func (e *env) dial(query string) *websocket.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.base+query, nil)
	if err != nil {
		e.t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(frame.MaxMessageSize)
	return c
}

// connect dials query, sends open and returns the peer with its ack.
func (e *env) connect(query string, open *agentpb.StreamOpen) (*peer, *agentpb.StreamOpenAck) {
	e.t.Helper()
	p := newPeer(e.t, e.dial(query), true)
	p.write(open)
	tag, m := p.next()
	if tag != frame.TagOpenAck {
		e.t.Fatalf("first message is %v, want OpenAck", tag)
	}
	return p, m.(*agentpb.StreamOpenAck)
}

// mustConnect is connect that fails the test on a rejected ack.
func (e *env) mustConnect(query string, open *agentpb.StreamOpen) *peer {
	e.t.Helper()
	p, ack := e.connect(query, open)
	if !ack.GetAccepted() {
		e.t.Fatalf("open rejected: %q", ack.GetError().GetMessage())
	}
	if ack.GetResumeFromSeq() != open.GetResumeFromSeq() {
		e.t.Fatalf("ack resume %d, want the echo %d", ack.GetResumeFromSeq(), open.GetResumeFromSeq())
	}
	return p
}

func newPeer(t testing.TB, c *websocket.Conn, read bool) *peer {
	p := &peer{t: t, c: c, wake: make(chan struct{}, 1), closed: make(chan struct{})}
	t.Cleanup(func() { c.CloseNow() })
	if read {
		go p.readAll()
	}
	return p
}

func (p *peer) readAll() {
	defer close(p.closed)
	for {
		tag, m, err := frame.ReadFrame(context.Background(), p.c)
		p.mu.Lock()
		p.inbox = append(p.inbox, msg{tag, m, err})
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
		if err != nil && tag == 0 {
			return
		}
	}
}

func (p *peer) write(m proto.Message) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := frame.WriteFrame(ctx, p.c, m); err != nil {
		p.t.Fatalf("write %T: %v", m, err)
	}
}

// send writes a StreamFrame stamped with the peer's next seq.
func (p *peer) send(data string) {
	p.t.Helper()
	p.write(&agentpb.StreamFrame{ChannelId: "ch", Seq: p.seq, Data: []byte(data)})
	p.seq++
}

// next returns the next message, failing the test after waitFor or on a socket end.
func (p *peer) next() (frame.Tag, proto.Message) {
	p.t.Helper()
	m, ok := p.nextMsg(waitFor)
	if !ok {
		p.t.Fatalf("no message within %v", waitFor)
	}
	if m.err != nil {
		p.t.Fatalf("socket ended: %v", m.err)
	}
	return m.tag, m.m
}

func (p *peer) nextMsg(d time.Duration) (msg, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		if len(p.inbox) > 0 {
			m := p.inbox[0]
			p.inbox = p.inbox[1:]
			p.mu.Unlock()
			return m, true
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-deadline.C:
			return msg{}, false
		}
	}
}

func (p *peer) nextFrame() *agentpb.StreamFrame {
	p.t.Helper()
	tag, m := p.next()
	if tag != frame.TagFrame {
		p.t.Fatalf("got %v %v, want a Frame", tag, m)
	}
	return m.(*agentpb.StreamFrame)
}

func (p *peer) nextClose() *agentpb.StreamClose {
	p.t.Helper()
	tag, m := p.next()
	if tag != frame.TagClose {
		p.t.Fatalf("got %v %v, want a Close", tag, m)
	}
	return m.(*agentpb.StreamClose)
}

// expectEnd waits for the socket to end (after any queued messages) and
// returns its error.
func (p *peer) expectEnd() error {
	p.t.Helper()
	for {
		m, ok := p.nextMsg(waitFor)
		if !ok {
			p.t.Fatalf("socket still open after %v", waitFor)
		}
		if m.err != nil && m.tag == 0 {
			return m.err
		}
	}
}

// eventually polls cond until it holds; the deadline is the failure.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.EventuallyTrue(t, waitFor, what, cond)
}
