package devstack

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
)

// Secrets never reach the logs: the platform and an agent log at debug
// level through pairing, ops, a bad bearer and a revocation, and no secret
// of either side appears in what they wrote.
func TestSecretsNeverLogged(t *testing.T) {
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	root := t.TempDir()
	p, err := StartPlatform(t.Context(), PlatformOptions{DataDir: filepath.Join(root, "data"), NATSPort: -1, HTTPPort: -1,
		RelayURL: "ws://127.0.0.1:1/stream", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	ctx := t.Context()
	creds, err := p.EnrollLocalMachine(ctx, filepath.Join(root, "agent"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Servers: creds.NATSURLs, Token: creds.NATSBearer, WorkspaceID: creds.WorkspaceID,
		AgentID: creds.AgentID, WorkspaceRoot: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: 2 * time.Second,
		Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(actx) }()
	defer func() { cancel(); <-done }()
	sess := session(t, p.ControlConnFactory(), creds)
	natstest.Eventually(t, 10*time.Second, func() error {
		if !sess.Ping(ctx) {
			return context.DeadlineExceeded
		}
		return nil
	})
	if _, err := sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}}); err != nil {
		t.Fatal(err)
	}
	// A revocation logs its reasons (and kicks the agent, which retries).
	if err := p.Admin().Do(ctx, http.MethodPost, "/v1/workspaces/"+creds.WorkspaceID+"/enrollments/"+creds.AgentID+"/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "revoked agent disconnected") {
			return context.DeadlineExceeded
		}
		return nil
	})
	st := p.state
	secrets := map[string]string{
		"signing secret": st.SigningSecret, "relay token secret": st.RelayTokenSecret, "stream token secret": st.StreamTokenSecret,
		"callout seed": st.CalloutSeed, "control password": st.ControlPassword, "callout password": st.CalloutPassword,
		"relay NATS password": st.RelayNATSPassword, "kick password": st.SysPassword,
		"admin token": st.AdminToken, "bearer": creds.NATSBearer, "relay token": creds.RelayToken,
	}
	out := logs.String()
	if len(out) < 500 {
		t.Fatalf("suspiciously little logged (%d bytes): the test would prove nothing", len(out))
	}
	for name, s := range secrets {
		if s == "" {
			t.Errorf("%s is empty: nothing to look for", name)
			continue
		}
		// The last 16 characters (a token's signature) spot a partial leak;
		// token prefixes are shared by every token of a kind.
		if strings.Contains(out, s[max(0, len(s)-16):]) {
			t.Errorf("%s appears in the logs", name)
		}
	}
}
