package control

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestPipelineMapsNoRespondersAndTimeouts(t *testing.T) {
	srv := natstest.Start(t)
	rpc := NewNATSRPC(DialNATS(srv.ClientURL()))
	t.Cleanup(rpc.Close)
	ctx := context.Background()
	ping := &agentpb.ControlRequest{RequestId: "r1", Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{}}}

	p, err := rpc.Pipeline(ctx, SubjectFor("ws", "nobody"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	f, err := p.Send(ping)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Wait(ctx, 5*time.Second)
	var ce *Error
	if !errors.As(err, &ce) || !ce.AgentOffline {
		t.Fatalf("no responders: %v", err)
	}

	// A responder that never answers: TIMEOUT, retryable.
	nc := natstest.Connect(t, srv)
	if _, err := nc.SubscribeSync(SubjectFor("ws", "silent")); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	p2, err := rpc.Pipeline(ctx, SubjectFor("ws", "silent"))
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	f, _ = p2.Send(ping)
	_, err = f.Wait(ctx, 50*time.Millisecond)
	if !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_TIMEOUT || !ce.Retryable {
		t.Fatalf("silent responder: %v", err)
	}

	// The caller's own cancellation is a plain error, not a TIMEOUT.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	f, _ = p2.Send(ping)
	_, err = f.Wait(cctx, 5*time.Second)
	if !errors.Is(err, context.Canceled) || errors.As(err, &ce) {
		t.Fatalf("canceled wait: %v", err)
	}

	// A reply that does not decode is PROTOCOL.
	if _, err := nc.Subscribe(SubjectFor("ws", "garbled"), func(m *nats.Msg) { _ = m.Respond([]byte{0xff}) }); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	p3, err := rpc.Pipeline(ctx, SubjectFor("ws", "garbled"))
	if err != nil {
		t.Fatal(err)
	}
	defer p3.Close()
	f, _ = p3.Send(ping)
	_, err = f.Wait(ctx, 5*time.Second)
	if !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_PROTOCOL {
		t.Fatalf("garbled reply: %v", err)
	}
}
