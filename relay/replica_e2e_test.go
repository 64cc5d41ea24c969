package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/token"
)

const (
	repSecret = "replica-secret"
	repWS     = "11111111-1111-4111-8111-111111111111"
	repAgent  = "44444444-4444-4444-8444-444444444444"
	repExp    = 4102444800
	repWait   = 20 * time.Second // failure deadline only
)

// replica is one relay process's worth: a Server with its own NATS
// connection and its own listener.
type replica struct {
	name string
	srv  *relay.Server
	nc   *nats.Conn
	addr string
	stop func() // closes the listener and every connection
}

func startReplica(tb testing.TB, ns *server.Server, name string) *replica {
	tb.Helper()
	nc := natstest.Connect(tb, ns)
	o := relay.TestOptions(repSecret)
	o.RingFrames = relay.DefaultRingFrames // the agent's replay window (1024 frames) fits
	o.RateBurstBytes, o.RateBytesPerSec = 64<<20, 64<<20
	o.NATS = nc
	o.ReplicaHeartbeat = 100 * time.Millisecond // the crash case waits PeerTimeout (3 beats)
	srv, err := relay.New(o, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	r := &replica{name: name, srv: srv, nc: nc, addr: ln.Addr().String()}
	r.stop = func() { once.Do(func() { cancel(); <-done }) }
	tb.Cleanup(r.stop)
	return r
}

// balancer is a plain TCP load balancer: each connection goes to the first
// backend that accepts it (no affinity, no knowledge of channels).
type balancer struct {
	ln       net.Listener
	backends []string
	wg       sync.WaitGroup
}

func newBalancer(tb testing.TB, backends ...*replica) *balancer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &balancer{ln: ln}
	for _, r := range backends {
		b.backends = append(b.backends, r.addr)
	}
	b.wg.Add(1)
	go b.serve()
	tb.Cleanup(func() { ln.Close(); b.wg.Wait() })
	return b
}

func (b *balancer) url() string { return "ws://" + b.ln.Addr().String() + "/stream" }

func (b *balancer) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			for _, addr := range b.backends {
				bc, err := net.Dial("tcp", addr)
				if err != nil {
					continue // that replica is gone: the next one
				}
				defer bc.Close()
				go func() { io.Copy(bc, c); bc.Close(); c.Close() }()
				io.Copy(c, bc)
				return
			}
		}()
	}
}

func repDialer(tb testing.TB, url string) *stream.Dialer {
	tok, err := token.MintAgent(repSecret, token.AgentClaims{WorkspaceID: repWS, AgentID: repAgent, Exp: repExp}, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return &stream.Dialer{RelayURL: url, Token: tok, WorkspaceID: repWS, AgentID: repAgent,
		Backoff: backoff.Exponential(10*time.Millisecond, 100*time.Millisecond)}
}

func repViewer(tb testing.TB, url string, desc *agentpb.StreamChannel) *control.StreamViewer {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), repWait)
	defer cancel()
	v, err := control.DialStream(ctx, control.ViewerOptions{
		URL: stream.DialURL(url, desc), Channel: desc,
		Token: func(context.Context) (string, error) {
			return token.MintViewer(repSecret, token.ViewerClaims{WorkspaceID: repWS, SessionID: "22222222-2222-4222-8222-222222222222",
				ViewerID: "33333333-3333-4333-8333-333333333333", Mode: token.ModeControl, Port: desc.GetPort(), Exp: repExp}, time.Now())
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { v.Close() })
	return v
}

// sink collects a viewer's output and wakes waiters on every chunk.
type sink struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	wake chan struct{}
}

func collect(v *control.StreamViewer) *sink {
	s := &sink{wake: make(chan struct{}, 1)}
	go func() {
		for b := range v.Output() {
			s.mu.Lock()
			s.buf.Write(b)
			s.mu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

func (s *sink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

func (s *sink) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

// waitLen waits until at least n bytes arrived.
func (s *sink) waitLen(tb testing.TB, n int) {
	tb.Helper()
	deadline := time.After(repWait)
	for s.len() < n {
		select {
		case <-s.wake:
		case <-deadline:
			tb.Fatalf("viewer has %d bytes, want %d", s.len(), n)
		}
	}
}

func recvInput(tb testing.TB, ch *stream.Channel, want string) {
	tb.Helper()
	select {
	case b := <-ch.Recv():
		if string(b) != want {
			tb.Fatalf("agent got input %q, want %q", b, want)
		}
	case <-time.After(repWait):
		tb.Fatalf("agent never got input %q", want)
	}
}

// A terminal whose agent and viewer sit on different replicas works, and
// when the agent's replica dies mid-stream both reconnect through the load
// balancer and the output continues with no byte lost or doubled.
func TestReplicasRouteAChannelAndSurviveTheHomeDying(t *testing.T) {
	tests := []struct {
		name  string
		crash bool // the dying replica's NATS link goes first: no goodbye, only silence
		three bool // the agent fails over to a third replica, the viewer stays on B
	}{
		{name: "graceful, two replicas"},
		{name: "crash, three replicas", crash: true, three: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ns := natstest.Start(t)
			a, b := startReplica(t, ns, "A"), startReplica(t, ns, "B")
			agentLB, viewerLB := newBalancer(t, a, b), newBalancer(t, b)
			if tc.three {
				c := startReplica(t, ns, "C")
				agentLB = newBalancer(t, a, c)
			}

			ctx, cancel := context.WithTimeout(context.Background(), repWait)
			defer cancel()
			agent, err := repDialer(t, agentLB.url()).Open(ctx, agentpb.StreamKind_STREAM_KIND_PTY, stream.PortPTY)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { agent.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, "done") })
			viewer := repViewer(t, viewerLB.url(), agent.Descriptor())
			out := collect(viewer)

			// The channel lives on A; B only proxies the viewer.
			if got := b.srv.Metrics().OpensAccepted.Load(); got != 0 {
				t.Fatalf("B accepted %d opens into its own registry, want 0 (the viewer must be proxied)", got)
			}
			if got := a.srv.Metrics().OpensAccepted.Load(); got != 2 {
				t.Fatalf("A accepted %d opens, want 2 (the agent and the proxied viewer)", got)
			}

			// Input crosses too.
			if err := viewer.Send(ctx, []byte("ls\n")); err != nil {
				t.Fatal(err)
			}
			recvInput(t, agent, "ls\n")

			// A long numbered stream, paced like a terminal: at most window
			// frames unseen by the viewer (within the agent's replay buffer
			// and the relay's ring), so a dying relay can lose nothing.
			const frames, window = 3000, 256
			line := func(i int) []byte { return fmt.Appendf(nil, "line %08d of the terminal stream\n", i) }
			lineLen := len(line(0))
			var want bytes.Buffer
			for i := range frames {
				want.Write(line(i))
			}
			sent := make(chan error, 1)
			go func() {
				for i := range frames {
					for out.len() < (i-window)*lineLen {
						select {
						case <-out.wake:
						case <-ctx.Done():
							sent <- ctx.Err()
							return
						}
					}
					if err := agent.Send(ctx, line(i)); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()

			out.waitLen(t, frames/3*lineLen)
			if tc.crash {
				a.nc.Close() // no goodbye reaches B: it must notice the silence
			}
			a.stop()

			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			out.waitLen(t, want.Len())
			got := out.bytes()
			if !bytes.Equal(got, want.Bytes()) {
				i := 0
				for i < min(len(got), want.Len()) && got[i] == want.Bytes()[i] {
					i++
				}
				t.Fatalf("output differs at byte %d of %d (got %d bytes): got %q, want %q", i, want.Len(), len(got),
					got[i:min(i+40, len(got))], want.Bytes()[i:min(i+40, want.Len())])
			}
			t.Logf("viewer %+v agent %+v", viewer.Stats(), agent.Stats())
			if st := viewer.Stats(); st.Gaps != 0 || st.Connects < 2 {
				t.Fatalf("viewer stats %+v: want a reconnect and no gap", st)
			}

			// The channel still works both ways after the failover.
			if err := viewer.Send(ctx, []byte("after\n")); err != nil {
				t.Fatal(err)
			}
			recvInput(t, agent, "after\n")
			if err := agent.Send(ctx, []byte("still here\n")); err != nil {
				t.Fatal(err)
			}
			out.waitLen(t, want.Len()+len("still here\n"))
			if tail := out.bytes()[want.Len():]; string(tail) != "still here\n" {
				t.Fatalf("after the failover the viewer got %q", tail)
			}
		})
	}
}
