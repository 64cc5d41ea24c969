// Package e2e drives a real agent through the control library over a real,
// in-process nats-server: every op the platform uses, end to end.
package e2e

import (
	"cmp"
	"context"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/logging"
	"github.com/opengeni/opengeni-agent/internal/natstest"
)

const (
	testWS    = "11111111-1111-1111-1111-111111111111"
	testAgent = "agent-e2e"
)

// testLogger shows warnings and errors (OPENGENI_LOG_LEVEL=debug for every op).
var testLogger = logging.New(os.Stderr, cmp.Or(os.Getenv("OPENGENI_LOG_LEVEL"), "warn"))

type env struct {
	srv   *server.Server
	root  string
	agent *agent.Agent
	rpc   *control.NATSRPC
	stop  context.CancelFunc
	done  chan error
}

// newEnv starts a nats-server and an agent rooted at a temp dir.
func newEnv(t testing.TB, natsOpts []natstest.Option, mutate func(*agent.Options)) *env {
	t.Helper()
	e := &env{srv: natstest.Start(t, natsOpts...), root: t.TempDir()}
	e.startAgent(t, mutate)
	e.rpc = control.NewNATSRPC(control.DialNATS(e.srv.ClientURL()))
	t.Cleanup(e.rpc.Close)
	return e
}

func (e *env) startAgent(t testing.TB, mutate func(*agent.Options)) {
	t.Helper()
	opts := agent.Options{
		Servers:       []string{e.srv.ClientURL()},
		WorkspaceID:   testWS,
		AgentID:       testAgent,
		WorkspaceRoot: e.root,
		DrainTimeout:  5 * time.Second,
		Logger:        testLogger,
	}
	if mutate != nil {
		mutate(&opts)
	}
	a, err := agent.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.agent, e.stop, e.done = a, cancel, make(chan error, 1)
	go func() { e.done <- a.Run(ctx) }()
	done := e.done
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	// Wait until the agent answers.
	sess := e.session(t, nil)
	natstest.Eventually(t, 10*time.Second, func() error {
		if !sess.Ping(context.Background()) {
			return context.DeadlineExceeded
		}
		return nil
	})
}

// stopAgent stops the agent and waits for Run to return.
func (e *env) stopAgent(t testing.TB) {
	t.Helper()
	e.stop()
	select {
	case err := <-e.done:
		if err != nil {
			t.Fatalf("agent Run: %v", err)
		}
		e.done <- nil
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not stop")
	}
}

func (e *env) session(t testing.TB, mutate func(*control.SessionConfig)) *control.Session {
	t.Helper()
	cfg := control.SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: e.rpc, Timeout: 20 * time.Second}
	if e.rpc == nil {
		rpc := control.NewNATSRPC(control.DialNATS(e.srv.ClientURL()))
		t.Cleanup(rpc.Close)
		cfg.RPC = rpc
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := control.NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
