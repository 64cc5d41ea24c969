package authcallout

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
)

// A next-revision connection's short user JWT expires; the agent treats it
// as a credential rotation: it reconnects at once (no backoff), the callout
// issues a fresh JWT for the same instance (its own lease), and the machine
// answers again.
func TestAgentReconnectsAtOnceWhenItsJWTExpires(t *testing.T) {
	w := newWorld(t, "", func(_ *store.Options, c *Config) {
		c.Leases = struct{ Leases }{} // replaced by the world's store
		c.ConnectionJWTTTL = 2 * time.Second
	})
	e, b := w.enroll(t, wsA, "pk-expiry")
	logs := &syncbuf.Buffer{}
	a, err := agent.New(agent.Options{Servers: []string{w.srv.ClientURL()}, Token: b, WorkspaceID: wsA, AgentID: e.ID,
		WorkspaceRoot: t.TempDir(), Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()

	rpc := control.NewNATSRPC(control.StaticConn(w.control))
	sess, err := control.NewSession(control.SessionConfig{WorkspaceID: wsA, AgentID: e.ID, RPC: rpc, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 15*time.Second, func() error {
		if !strings.Contains(logs.String(), "NATS user JWT expired; reconnecting at once") {
			return errf("no expiry yet")
		}
		if !strings.Contains(logs.String(), `msg="agent reconnected"`) {
			return errf("not reconnected yet")
		}
		return nil
	})
	natstest.Eventually(t, 10*time.Second, func() error {
		if !sess.Ping(ctx) {
			return errf("no answer after the rotation")
		}
		return nil
	})
	if strings.Contains(logs.String(), "refused this machine's enrollment bearer") {
		t.Fatalf("the rotation was taken for a refusal:\n%s", logs.String())
	}
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
