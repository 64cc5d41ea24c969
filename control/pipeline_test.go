package control

import (
	"context"
	"errors"
	"testing"
	"time"

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
}
