package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func pingReq() *agentpb.ControlRequest {
	return &agentpb.ControlRequest{RequestId: "req-1", Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: 42}}}
}

func wantCode(t *testing.T, resp *agentpb.ControlResponse, err error, code agentpb.ErrorCode) {
	t.Helper()
	if err != nil {
		t.Fatalf("Request error: %v", err)
	}
	if got := resp.GetError().GetCode(); got != code {
		t.Fatalf("code = %v, want %v (resp %v)", got, code, resp)
	}
	if resp.GetRequestId() != "req-1" {
		t.Fatalf("request id = %q", resp.GetRequestId())
	}
}

// countingFactory wraps a factory, counting calls and keeping the connections.
type countingFactory struct {
	inner ConnFactory
	calls atomic.Int32
	mu    sync.Mutex
	conns []*nats.Conn
}

func (c *countingFactory) dial(ctx context.Context) (*nats.Conn, error) {
	c.calls.Add(1)
	nc, err := c.inner(ctx)
	if nc != nil {
		c.mu.Lock()
		c.conns = append(c.conns, nc)
		c.mu.Unlock()
	}
	return nc, err
}

func (c *countingFactory) lastConn() *nats.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns[len(c.conns)-1]
}

// §8 NatsControlRpc 45: no connection → agent_offline; construction never
// needs a bus.
func TestNATSRPCNoConnection(t *testing.T) {
	ctx := ctxT(t)
	for name, f := range map[string]ConnFactory{
		"nil factory":  nil,
		"nil conn":     func(context.Context) (*nats.Conn, error) { return nil, nil },
		"error":        func(context.Context) (*nats.Conn, error) { return nil, errors.New("no bus") },
		"static nil":   StaticConn(nil),
		"dial refused": DialNATS("nats://127.0.0.1:1", nats.Timeout(200*time.Millisecond)),
	} {
		t.Run(name, func(t *testing.T) {
			rpc := NewNATSRPC(f)
			resp, err := rpc.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second)
			wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE)
			if resp.GetError().GetMessage() != OfflineMessage || resp.GetError().GetRetryable() {
				t.Fatalf("resp = %v", resp)
			}
			s, _ := NewSession(SessionConfig{WorkspaceID: "w", AgentID: "a", RPC: rpc})
			_, err = s.Exec(ctx, ExecOptions{Cmd: "true"})
			if ce := asError(t, err); ce.Reason != ReasonAgentOffline || !ce.AgentOffline || IsProviderNotFound(err) {
				t.Fatalf("exec = %+v", ce)
			}
			if got := rpc.MaxPayload(ctx); got != DefaultMaxPayload {
				t.Fatalf("MaxPayload = %d", got)
			}
		})
	}
}

// Better than the v1 quirk: a failed dial is retried by the next request.
func TestNATSRPCRetriesFailedDial(t *testing.T) {
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	newMock("").serve(t, agentNC, "agent.w.a.rpc")
	var fail atomic.Bool
	fail.Store(true)
	cf := &countingFactory{inner: DialNATS(srv.ClientURL())}
	rpc := NewNATSRPC(func(ctx context.Context) (*nats.Conn, error) {
		if fail.Load() {
			cf.calls.Add(1)
			return nil, errors.New("bus not ready")
		}
		return cf.dial(ctx)
	})
	t.Cleanup(rpc.Close)
	ctx := ctxT(t)
	resp, err := rpc.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second)
	wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE)
	fail.Store(false)
	resp, err = rpc.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second)
	if err != nil || resp.GetPing() == nil {
		t.Fatalf("after the bus came up: %v %v", resp, err)
	}
	// Memoized: more requests, no more dials.
	for range 3 {
		rpc.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second)
	}
	if n := cf.calls.Load(); n != 2 {
		t.Fatalf("factory calls = %d, want 2", n)
	}
}

// Concurrent first requests share one dial.
func TestNATSRPCSharesOneDial(t *testing.T) {
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	newMock("").serve(t, agentNC, "agent.w.a.rpc")
	gate := make(chan struct{})
	cf := &countingFactory{inner: DialNATS(srv.ClientURL())}
	rpc := NewNATSRPC(func(ctx context.Context) (*nats.Conn, error) {
		<-gate
		return cf.dial(ctx)
	})
	t.Cleanup(rpc.Close)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			resp, err := rpc.Request(ctx, "agent.w.a.rpc", pingReq(), 5*time.Second)
			if err != nil || resp.GetPing() == nil {
				errs <- fmt.Errorf("%v %v", resp, err)
			}
		})
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := cf.calls.Load(); n != 1 {
		t.Fatalf("dials = %d, want 1", n)
	}
}

// §8 NatsControlRpc 46-47 and the rest of the §2.2 table, on a real server.
func TestNATSRPCTransportMapping(t *testing.T) {
	srv := natstest.Start(t, natstest.MaxPayload(64*1024))
	agentNC := natstest.Connect(t, srv)
	// A responder that never answers (timeout), one that answers garbage.
	silent, _ := agentNC.Subscribe("agent.w.silent.rpc", func(*nats.Msg) {})
	defer silent.Unsubscribe()
	garbage, _ := agentNC.Subscribe("agent.w.garbage.rpc", func(m *nats.Msg) { m.Respond([]byte{0xff, 0xff, 0xff}) })
	defer garbage.Unsubscribe()
	agentNC.Flush()
	cf := &countingFactory{inner: DialNATS(srv.ClientURL())}
	rpc := NewNATSRPC(cf.dial)
	t.Cleanup(rpc.Close)
	ctx := ctxT(t)

	t.Run("no responders", func(t *testing.T) { // 46
		resp, err := rpc.Request(ctx, "agent.w.nobody.rpc", pingReq(), 2*time.Second)
		wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE)
	})
	t.Run("timeout", func(t *testing.T) { // 47
		start := time.Now()
		resp, err := rpc.Request(ctx, "agent.w.silent.rpc", pingReq(), 150*time.Millisecond)
		wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_TIMEOUT)
		if !resp.GetError().GetRetryable() || resp.GetError().GetMessage() != TimeoutMessage {
			t.Fatalf("resp = %v", resp)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
	})
	t.Run("caller deadline is a timeout", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		resp, err := rpc.Request(dctx, "agent.w.silent.rpc", pingReq(), time.Minute)
		wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_TIMEOUT)
	})
	t.Run("caller cancel is an error", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(50*time.Millisecond, cancel)
		resp, err := rpc.Request(cctx, "agent.w.silent.rpc", pingReq(), time.Minute)
		if !errors.Is(err, context.Canceled) || resp != nil {
			t.Fatalf("Request = %v, %v", resp, err)
		}
	})
	t.Run("undecodable reply", func(t *testing.T) {
		resp, err := rpc.Request(ctx, "agent.w.garbage.rpc", pingReq(), 2*time.Second)
		wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_PROTOCOL)
	})
	t.Run("request too large", func(t *testing.T) {
		big := &agentpb.ControlRequest{RequestId: "req-1", Op: &agentpb.ControlRequest_FsWrite{FsWrite: &agentpb.FsWriteRequest{Content: make([]byte, 100*1024)}}}
		resp, err := rpc.Request(ctx, "agent.w.silent.rpc", big, 2*time.Second)
		wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE)
		if d := resp.GetError().GetDetail(); d["op"] != "fs_write" || d["max_payload"] != "65536" {
			t.Fatalf("detail = %v", d)
		}
		if ce := FromAgentError(resp.GetError()); !ce.PayloadTooLarge || ce.Retryable || ce.AgentOffline {
			t.Fatalf("error = %+v", ce)
		}
	})
	t.Run("max payload", func(t *testing.T) {
		if got := rpc.MaxPayload(ctx); got != 64*1024 {
			t.Fatalf("MaxPayload = %d", got)
		}
	})
	// None of these conditions re-dialed.
	if n := cf.calls.Load(); n != 1 {
		t.Fatalf("dials = %d, want 1", n)
	}

	t.Run("transport error drops the connection", func(t *testing.T) {
		// The responder kills the control connection mid-request: the
		// request sees a transport error (offline), the next one re-dials.
		var once sync.Once
		sub, _ := agentNC.Subscribe("agent.w.killer.rpc", func(m *nats.Msg) {
			once.Do(func() { cf.lastConn().Close() })
			out, _ := proto.Marshal(&agentpb.ControlResponse{RequestId: "req-1", Result: &agentpb.ControlResponse_Ping{Ping: &agentpb.PingResponse{}}})
			m.Respond(out)
		})
		defer sub.Unsubscribe()
		agentNC.Flush()
		first := cf.lastConn()
		resp, err := rpc.Request(ctx, "agent.w.killer.rpc", pingReq(), 2*time.Second)
		wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE)
		resp, err = rpc.Request(ctx, "agent.w.killer.rpc", pingReq(), 2*time.Second)
		if err != nil || resp.GetPing() == nil {
			t.Fatalf("after re-dial: %v %v", resp, err)
		}
		if n := cf.calls.Load(); n != 2 || cf.lastConn() == first || !first.IsClosed() {
			t.Fatalf("dials = %d", n)
		}
	})
}

// DialNATS closes the connection it made before when it re-dials.
func TestDialNATSClosesPrevious(t *testing.T) {
	srv := natstest.Start(t)
	f := DialNATS(srv.ClientURL())
	ctx := ctxT(t)
	nc1, err := f(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nc2, err := f(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	if !nc1.IsClosed() || nc2.IsClosed() || nc1 == nc2 {
		t.Fatal("re-dial did not replace the connection")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := f(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled dial = %v", err)
	}
}

// StaticConn: a closed connection reads as offline; Close makes every later
// request offline.
func TestStaticConnAndClose(t *testing.T) {
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	newMock("").serve(t, agentNC, "agent.w.a.rpc")
	nc := natstest.Connect(t, srv)
	rpc := NewNATSRPC(StaticConn(nc))
	ctx := ctxT(t)
	if resp, err := rpc.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second); err != nil || resp.GetPing() == nil {
		t.Fatalf("%v %v", resp, err)
	}
	nc.Close()
	resp, err := rpc.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second)
	wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE)

	rpc2 := NewNATSRPC(DialNATS(srv.ClientURL()))
	if resp, err := rpc2.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second); err != nil || resp.GetPing() == nil {
		t.Fatalf("%v %v", resp, err)
	}
	rpc2.Close()
	resp, err = rpc2.Request(ctx, "agent.w.a.rpc", pingReq(), time.Second)
	wantCode(t, resp, err, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE)
}

// §8 NatsControlRpc 48: a raw responder decodes the request and encodes a
// ping reply → Ping is true.
func TestNATSRPCRawPingResponder(t *testing.T) {
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	var got atomic.Pointer[agentpb.ControlRequest]
	sub, _ := agentNC.Subscribe(SubjectFor("w", "a"), func(m *nats.Msg) {
		req := new(agentpb.ControlRequest)
		if err := proto.Unmarshal(m.Data, req); err != nil {
			return
		}
		got.Store(req)
		out, _ := proto.Marshal(&agentpb.ControlResponse{RequestId: req.GetRequestId(),
			Result: &agentpb.ControlResponse_Ping{Ping: &agentpb.PingResponse{Nonce: req.GetPing().GetNonce()}}})
		m.Respond(out)
	})
	defer sub.Unsubscribe()
	agentNC.Flush()
	rpc := NewNATSRPC(DialNATS(srv.ClientURL()))
	t.Cleanup(rpc.Close)
	s, _ := NewSession(SessionConfig{WorkspaceID: "w", AgentID: "a", RPC: rpc, Epoch: 3})
	if !s.Ping(ctxT(t)) {
		t.Fatal("Ping = false")
	}
	if r := got.Load(); r.GetPing() == nil || r.GetEpoch() != 3 {
		t.Fatalf("request = %v", r)
	}
}

// selfhosted-control-transport (real NATS) checks 1-4.
func TestControlTransportRealNATS(t *testing.T) {
	const wsA, wsB, agent = "ws-a", "ws-b", "agent-real-nats"
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	mock := newMock("real-nats-vm")
	subject := SubjectFor(wsA, agent)
	sub := mock.serve(t, agentNC, subject)
	rpc := NewNATSRPC(DialNATS(srv.ClientURL()))
	t.Cleanup(rpc.Close)
	ctx := ctxT(t)
	newSess := func(ws, ag string) *Session {
		s, err := NewSession(SessionConfig{WorkspaceID: ws, AgentID: ag, RPC: rpc, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := newSess(wsA, agent)

	// 1.
	out, err := s.ExecCommand(ctx, "hostname", "")
	if err != nil || strings.TrimSpace(out) != "real-nats-vm" {
		t.Fatalf("exec = %q, %v", out, err)
	}
	if _, err := s.WriteFile(ctx, "/tmp/marker", []byte("byo-over-nats"), nil); err != nil {
		t.Fatal(err)
	}
	if b, err := s.ReadFile(ctx, "/tmp/marker", 0); err != nil || string(b) != "byo-over-nats" {
		t.Fatalf("read = %q, %v", b, err)
	}

	// 2.
	_, err = newSess(wsA, "no-such-agent").Exec(ctx, ExecOptions{Cmd: "true"})
	if ce := asError(t, err); ce.Reason != ReasonAgentOffline || !ce.AgentOffline || ce.OSNotFound {
		t.Fatalf("no responder = %+v", ce)
	}

	// 3: the agent goes away and comes back; the same session heals.
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		_, err := s.Exec(ctx, ExecOptions{Cmd: "true"})
		var ce *Error
		if errors.As(err, &ce) && ce.AgentOffline {
			return nil
		}
		return fmt.Errorf("exec after unsubscribe: %v", err)
	})
	sub = mock.serve(t, agentNC, subject)
	defer sub.Unsubscribe()
	natstest.Eventually(t, 5*time.Second, func() error {
		_, err := s.Exec(ctx, ExecOptions{Cmd: "true"})
		return err
	})

	// 4: workspace isolation.
	if SubjectFor(wsB, agent) == SubjectFor(wsA, agent) {
		t.Fatal("subjects collide across workspaces")
	}
	_, err = newSess(wsB, agent).Exec(ctx, ExecOptions{Cmd: "true"})
	if ce := asError(t, err); !ce.AgentOffline {
		t.Fatalf("WS_B session = %+v", ce)
	}
	if _, err := newSess(wsA, agent).Exec(ctx, ExecOptions{Cmd: "true"}); err != nil {
		t.Fatalf("WS_A session: %v", err)
	}
	for _, r := range mock.requests() {
		if r.subject != subject {
			t.Fatalf("responder saw %q", r.subject)
		}
	}
}
