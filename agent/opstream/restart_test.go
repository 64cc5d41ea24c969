package opstream_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The nats-server restarts mid-op: the agent (both connections) and the
// consumer reconnect, the consumer reattaches from the first seq it lacks,
// and the output arrives whole, nothing doubled.
func TestNATSServerRestartMidOp(t *testing.T) {
	srv := natstest.Run(t)
	p := srv.Addr().(*net.TCPAddr).Port
	url := srv.ClientURL()
	t.Cleanup(func() { srv.Shutdown() })

	a, err := agent.New(agent.Options{Servers: []string{url}, WorkspaceID: testWS, AgentID: testAgent, WorkspaceRoot: t.TempDir(),
		Logger: slog.New(slog.DiscardHandler), NATSOptions: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: testWS, AgentID: testAgent,
		RPC: control.NewNATSRPC(control.StaticConn(nc)), Timeout: 5 * time.Second,
		Instances: control.InstanceResolverFunc(func(context.Context, string, string) (string, error) { return a.Instance(), nil })})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if !s.Ping(context.Background()) {
			return errors.New("agent not up")
		}
		return nil
	})
	const n = 200000
	want := seqOutput(n)
	op, _, err := s.StartOp(context.Background(), execStart("seq", "1", strconv.Itoa(n)), &control.OpOptions{Window: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	var got bytes.Buffer
	restarted := false
	for {
		fr, err := op.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if fr.GetExit() != nil {
			break
		}
		got.Write(fr.GetData().GetBytes())
		if !restarted && got.Len() > 256<<10 {
			restarted = true
			srv.Shutdown()
			srv.WaitForShutdown()
			srv = natstest.Run(t, natstest.Port(p))
		}
	}
	if !restarted || !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("restarted %v; got %d bytes, want %d; equal prefix %d", restarted, got.Len(), len(want), commonPrefix(got.Bytes(), want))
	}
}

// A restarted agent is a new process with a new connection instance that
// never saw the op: asked about it there, the op is lost, AGENT_RESTARTED.
// (The old process keeps running here; its ops are not the new one's.)
func TestAgentRestartReportsOpLost(t *testing.T) {
	f := start(t)
	s := f.session(t)
	op, _, err := s.StartOp(context.Background(), execStart("sleep", "1000"), nil)
	if err != nil {
		t.Fatal(err)
	}
	op.Close()
	b, err := agent.New(agent.Options{Servers: []string{f.srv.ClientURL()}, WorkspaceID: testWS, AgentID: testAgent,
		WorkspaceRoot: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s2, err := control.NewSession(control.SessionConfig{WorkspaceID: testWS, AgentID: testAgent,
		RPC: control.NewNATSRPC(control.StaticConn(natstest.Connect(t, f.srv))), Timeout: 5 * time.Second,
		Instances: control.InstanceResolverFunc(func(context.Context, string, string) (string, error) { return b.Instance(), nil })})
	if err != nil {
		t.Fatal(err)
	}
	var lost *control.OpLostError
	natstest.Eventually(t, 10*time.Second, func() error {
		_, err := s2.AttachOp(context.Background(), op.ID(), 1, 0, nil)
		if !errors.As(err, &lost) {
			return errors.New("not answered lost yet: " + errString(err))
		}
		return nil
	})
	if lost.Reason != agentpb.OpLostReason_OP_LOST_REASON_AGENT_RESTARTED {
		t.Fatalf("reason %v", lost.Reason)
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}
