package control

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// A session with an instance resolver sends each op to the machine's live
// connection instance (control.md §9), to the v1 subject while there is
// none, and reports a route change mid-flight as FENCED, not as a timeout or
// "offline".
func TestSessionRoutesToLiveInstance(t *testing.T) {
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	const inst1, inst2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	var live atomic.Value
	live.Store("")
	answered := make(chan string, 16)
	silent := make(chan struct{}, 16) // inst1 turns silent: it receives but never answers
	serve := func(subj, name string, mute *atomic.Bool) {
		_, err := agentNC.Subscribe(subj, func(m *nats.Msg) {
			if mute.Load() {
				silent <- struct{}{}
				return
			}
			req := new(agentpb.ControlRequest)
			_ = proto.Unmarshal(m.Data, req)
			out, _ := proto.Marshal(&agentpb.ControlResponse{RequestId: req.GetRequestId(), Result: &agentpb.ControlResponse_Ping{Ping: &agentpb.PingResponse{}}})
			answered <- name
			_ = m.Respond(out)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var mute1, never atomic.Bool
	serve(SubjectFor("w", "a"), "v1", &never)
	serve(subject.Connection("w", "a", inst1)+".rpc", inst1, &mute1)
	if err := agentNC.Flush(); err != nil {
		t.Fatal(err)
	}
	rpc := NewNATSRPC(DialNATS(srv.ClientURL()))
	t.Cleanup(rpc.Close)
	resolver := InstanceResolverFunc(func(context.Context, string, string) (string, error) { return live.Load().(string), nil })
	s, err := NewSession(SessionConfig{WorkspaceID: "w", AgentID: "a", RPC: rpc, Instances: resolver, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	for _, c := range []struct{ live, want string }{{"", "v1"}, {inst1, inst1}} {
		live.Store(c.live)
		if !s.Ping(ctx) {
			t.Fatalf("live %q: no answer", c.live)
		}
		if got := <-answered; got != c.want {
			t.Fatalf("live %q: answered by %s", c.live, got)
		}
	}

	// inst1 stops answering; while the op waits, the machine reconnects as inst2.
	mute1.Store(true)
	go func() {
		<-silent
		live.Store(inst2)
	}()
	_, err = s.Metrics(ctx)
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_FENCED || !ce.Retryable || ce.Detail["sent_instance"] != inst1 || ce.Detail["live_instance"] != inst2 {
		t.Fatalf("route change mid-flight: %v", err)
	}
	// inst2 has no responder and the route did not move: plain offline.
	_, err = s.Metrics(ctx)
	if !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE {
		t.Fatalf("no responder on the live instance: %v", err)
	}
}
