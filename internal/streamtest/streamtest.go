// Package streamtest runs a real relay on loopback and a viewer speaking the
// relay wire format, for the tests of agent/stream and agent/pty. The relay
// can be restarted on the same address to exercise reconnects.
package streamtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/relayclient"
	"github.com/opengeni/opengeni-agent/internal/testutil"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// Fixture ids (relay.md §8.1).
const (
	Secret    = "relay-e2e-secret"
	Workspace = "11111111-1111-4111-8111-111111111111"
	Agent     = "44444444-4444-4444-8444-444444444444"
	Session   = "22222222-2222-4222-8222-222222222222"
	ViewerID  = "33333333-3333-4333-8333-333333333333"
	farExp    = 4102444800
)

// Deadline is the failure deadline of every poll.
const Deadline = 20 * time.Second

// Relay is a real relay server on 127.0.0.1.
type Relay struct {
	t    testing.TB
	Addr string
	opts relay.Options

	mu     sync.Mutex
	srv    *relay.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// StartRelay starts a relay with relay.TestOptions(Secret), a ring and rate
// limit large enough for bulk tests, and mut applied.
func StartRelay(t testing.TB, mut func(*relay.Options)) *Relay {
	t.Helper()
	o := relay.TestOptions(Secret)
	o.RingFrames = 1024
	o.RateBurstBytes = 64 << 20
	o.RateBytesPerSec = 64 << 20
	if mut != nil {
		mut(&o)
	}
	r := &Relay{t: t, opts: o, Addr: "127.0.0.1:0"}
	r.start()
	t.Cleanup(r.Stop)
	return r
}

func (r *Relay) start() {
	r.t.Helper()
	var ln net.Listener
	var err error
	for end := time.Now().Add(Deadline); ; {
		ln, err = net.Listen("tcp", r.Addr)
		if err == nil || time.Now().After(end) {
			break
		}
		time.Sleep(10 * time.Millisecond) // the old listener may still be closing
	}
	if err != nil {
		r.t.Fatalf("relay listen %s: %v", r.Addr, err)
	}
	r.Addr = ln.Addr().String()
	srv, err := relay.New(r.opts, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, ln) }()
	r.mu.Lock()
	r.srv, r.cancel, r.done = srv, cancel, done
	r.mu.Unlock()
}

// Stop shuts the relay down and drops every socket (no StreamClose).
func (r *Relay) Stop() {
	r.mu.Lock()
	cancel, done := r.cancel, r.done
	r.cancel = nil
	r.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Restart stops the relay and starts a fresh one (empty rings) on the same address.
func (r *Relay) Restart() {
	r.t.Helper()
	r.Stop()
	r.start()
}

// Server is the running relay.
func (r *Relay) Server() *relay.Server {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.srv
}

// URL is the agent's dial base.
func (r *Relay) URL() string { return "ws://" + r.Addr + "/stream" }

// Dialer returns an agent dialer for this relay with a fast test backoff.
func (r *Relay) Dialer() *stream.Dialer {
	tok, err := token.MintAgent(Secret, token.AgentClaims{WorkspaceID: Workspace, AgentID: Agent, Exp: farExp}, time.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	return &stream.Dialer{RelayURL: r.URL(), Token: tok, WorkspaceID: Workspace, AgentID: Agent,
		Backoff: backoff.Exponential(10*time.Millisecond, 200*time.Millisecond)}
}

// ViewerToken mints an ogs_ token in control mode for port.
func ViewerToken(t testing.TB, port uint32) string {
	tok, err := token.MintViewer(Secret, token.ViewerClaims{WorkspaceID: Workspace, SessionID: Session,
		ViewerID: ViewerID, Mode: token.ModeControl, Port: port, Exp: farExp}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Viewer is a terminal viewer on the relay wire format: it keeps a cursor
// (the next expected output seq), drops output below it and records gaps,
// as the reference browser client does (relay.md §9.6).
type Viewer struct {
	t     testing.TB
	relay *Relay
	desc  *agentpb.StreamChannel

	mu      sync.Mutex
	ws      *websocket.Conn
	gen     int
	outNext uint64
	out     bytes.Buffer
	frames  int
	dups    int
	gaps    []string
	closes  []*agentpb.StreamClose
	stopAt  func([]byte) bool // once true, the rest of this connection is "lost in flight"
	stopped bool
	wake    chan struct{}
}

// NewViewer returns a viewer of the channel desc (not yet connected).
func NewViewer(t testing.TB, r *Relay, desc *agentpb.StreamChannel) *Viewer {
	v := &Viewer{t: t, relay: r, desc: desc, wake: make(chan struct{}, 1)}
	t.Cleanup(func() {
		v.mu.Lock()
		ws := v.ws
		v.mu.Unlock()
		if ws != nil {
			ws.CloseNow()
		}
	})
	return v
}

// Connect dials until the relay accepts an Open(CLIENT) resuming at the
// viewer's cursor (the relay may be restarting).
func (v *Viewer) Connect() {
	v.t.Helper()
	v.Drop()
	end := time.Now().Add(Deadline)
	var last error
	for time.Now().Before(end) {
		if last = v.tryConnect(); last == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	v.t.Fatalf("viewer could not connect: %v", last)
}

func (v *Viewer) tryConnect() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v.mu.Lock()
	resume := v.outNext
	v.mu.Unlock()
	open := &agentpb.StreamOpen{Channel: v.desc, Token: ViewerToken(v.t, v.desc.Port),
		Role: agentpb.StreamRole_STREAM_ROLE_CLIENT, ResumeFromSeq: resume}
	ws, _, err := relayclient.Open(ctx, stream.DialURL(v.relay.URL(), v.desc), nil, open)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.ws = ws
	v.gen++
	gen := v.gen
	v.stopped = false
	v.stopAt = nil
	v.mu.Unlock()
	go v.read(ws, gen)
	return nil
}

// Drop closes the viewer's socket; frames not yet read are lost.
func (v *Viewer) Drop() {
	v.mu.Lock()
	ws := v.ws
	v.ws = nil
	v.gen++
	v.mu.Unlock()
	if ws != nil {
		ws.CloseNow()
	}
}

func (v *Viewer) read(ws *websocket.Conn, gen int) {
	for {
		tag, m, err := frame.ReadFrame(context.Background(), ws)
		if err != nil {
			if tag == 0 {
				return
			}
			continue
		}
		v.mu.Lock()
		if v.gen != gen || v.stopped {
			v.mu.Unlock()
			return
		}
		switch tag {
		case frame.TagFrame:
			f := m.(*agentpb.StreamFrame)
			switch {
			case f.Seq < v.outNext:
				v.dups++
			default:
				if f.Seq > v.outNext {
					v.gaps = append(v.gaps, fmt.Sprintf("expected seq %d, got %d", v.outNext, f.Seq))
				}
				v.out.Write(f.Data)
				v.outNext = f.Seq + 1
				v.frames++
				if v.stopAt != nil && v.stopAt(v.out.Bytes()) {
					v.stopped = true
				}
			}
		case frame.TagClose:
			v.closes = append(v.closes, m.(*agentpb.StreamClose))
		}
		v.mu.Unlock()
		select {
		case v.wake <- struct{}{}:
		default:
		}
	}
}

// StopAfter makes the viewer stop reading its current connection once pred
// holds for the output so far: everything after is lost in flight, as when
// the relay dies under it. Connect resumes from the cursor.
func (v *Viewer) StopAfter(pred func(out []byte) bool) {
	v.mu.Lock()
	v.stopAt = pred
	v.mu.Unlock()
}

// Stopped reports whether StopAfter's predicate has fired.
func (v *Viewer) Stopped() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.stopped
}

// Send writes one input frame (the relay stamps its seq).
func (v *Viewer) Send(data string) {
	v.t.Helper()
	v.SendMessage(&agentpb.StreamFrame{ChannelId: v.desc.ChannelId, Data: []byte(data)})
}

// SendMessage writes any relay message (e.g. a DesktopInput).
func (v *Viewer) SendMessage(m proto.Message) {
	v.t.Helper()
	v.mu.Lock()
	ws := v.ws
	v.mu.Unlock()
	if ws == nil {
		v.t.Fatal("viewer not connected")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := frame.WriteFrame(ctx, ws, m); err != nil {
		v.t.Fatalf("viewer send: %v", err)
	}
}

// SendClose sends a StreamClose (an intentional detach).
func (v *Viewer) SendClose(reason agentpb.StreamCloseReason) {
	v.t.Helper()
	v.SendMessage(&agentpb.StreamClose{ChannelId: v.desc.ChannelId, Reason: reason})
}

// Output returns a copy of the deduplicated output so far.
func (v *Viewer) Output() []byte {
	v.mu.Lock()
	defer v.mu.Unlock()
	return bytes.Clone(v.out.Bytes())
}

// Len is the number of output bytes received.
func (v *Viewer) Len() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.Len()
}

// Wake is signalled after each received message.
func (v *Viewer) Wake() <-chan struct{} { return v.wake }

// Gaps lists seq jumps (lost output); Dups counts dropped duplicates.
func (v *Viewer) Gaps() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.gaps...)
}

func (v *Viewer) Dups() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.dups
}

// Closes returns the StreamCloses received.
func (v *Viewer) Closes() []*agentpb.StreamClose {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]*agentpb.StreamClose(nil), v.closes...)
}

// WaitOutput polls until pred holds for the output, failing after Deadline.
func (v *Viewer) WaitOutput(what string, pred func(out []byte) bool) []byte {
	v.t.Helper()
	end := time.NewTimer(Deadline)
	defer end.Stop()
	for {
		out := v.Output()
		if pred(out) {
			return out
		}
		select {
		case <-v.wake:
		case <-time.After(50 * time.Millisecond):
		case <-end.C:
			v.t.Fatalf("viewer: timed out waiting for %s; output tail: %q", what, tail(v.Output(), 300))
		}
	}
}

// WaitContains waits until the output contains s.
func (v *Viewer) WaitContains(s string) []byte {
	v.t.Helper()
	return v.WaitOutput(fmt.Sprintf("%q", s), func(out []byte) bool { return bytes.Contains(out, []byte(s)) })
}

// Eventually polls cond until it holds, failing after Deadline.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testutil.EventuallyTrue(t, Deadline, what, cond)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.ToValidUTF8(string(b), "?")
}
