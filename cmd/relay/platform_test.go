package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/platform"
)

// `relay platform` end to end on an external nats-server configured with
// `relay platform nats-config` and secrets from `relay platform secrets`:
// a machine pairs through its enrollment API (credentials naming the
// external NATS and its relay), connects through the callout and answers.
func TestPlatformCommand(t *testing.T) {
	var secrets, conf, errb bytes.Buffer
	if code := run([]string{"platform", "secrets"}, &secrets, &errb); code != 0 {
		t.Fatalf("secrets: exit %d %s", code, errb.String())
	}
	env := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(secrets.String()), "\n") {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
		t.Setenv(k, v)
	}
	if code := run([]string{"platform", "nats-config"}, &conf, &errb); code != 0 || conf.String() != platform.AccountsConfig() {
		t.Fatalf("nats-config: exit %d", code)
	}
	// The server reads the secrets from the environment, as deployed.
	ns := natstest.Start(t, natstest.JetStream(t.TempDir()), func(o *server.Options) {
		if err := o.ProcessConfigString(conf.String()); err != nil {
			t.Fatal(err)
		}
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	exit := make(chan int, 1)
	go func() {
		exit <- runPlatform(ctx, []string{"-nats-url", ns.ClientURL() + ", ", "-replicas", "1", "-api-listen", "127.0.0.1:0",
			"-relay-listen", "127.0.0.1:0", "-log-level", "error"}, pw, io.Discard)
		pw.Close()
	}()
	apiLine := regexp.MustCompile(`enrollment API on (http://\S+);`)
	var apiURL, relayURL string
	sc := bufio.NewScanner(pr)
	for apiURL == "" && sc.Scan() {
		if m := apiLine.FindStringSubmatch(sc.Text()); m != nil {
			apiURL = m[1]
		}
		if _, after, ok := strings.Cut(sc.Text(), "agents dial "); ok {
			relayURL = strings.TrimSuffix(after, ")")
		}
	}
	go io.Copy(io.Discard, pr)
	if apiURL == "" || relayURL == "" {
		t.Fatalf("no API or relay line; exit %v", <-exit)
	}

	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	client := &agentenroll.Client{BaseURL: apiURL, UserAgent: "platform-cmd-test"}
	const ws = "6f1c1b9e-3c43-4f55-9a43-0c1d2c3b4a59"
	start, err := client.Start(ctx, agentenroll.StartRequest{WorkspaceID: ws, PublicKey: id.PublicKey(),
		OS: agentenroll.HostOS(), Arch: agentenroll.HostArch()})
	if err != nil {
		t.Fatal(err)
	}
	admin := platform.AdminClient{BaseURL: apiURL, Token: env[platform.EnvAdminToken]}
	if err := admin.Do(ctx, http.MethodPost, platform.ApprovePath(ws), map[string]any{"userCode": start.UserCode},
		&enroll.ApproveResponse{}); err != nil {
		t.Fatal(err)
	}
	wire, err := client.Poll(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if len(wire.NATSURLs) != 1 || wire.NATSURLs[0] != ns.ClientURL() || wire.RelayURL != relayURL || wire.RelayToken == "" {
		t.Fatalf("credentials: nats %q relay %q (want %q)", wire.NATSURLs, wire.RelayURL, relayURL)
	}
	a, err := agent.New(agent.Options{Servers: wire.NATSURLs, Token: wire.Bearer, WorkspaceID: wire.WorkspaceID, AgentID: wire.AgentID,
		WorkspaceRoot: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	rpc := control.NewNATSRPC(control.DialNATS(ns.ClientURL(), nats.UserInfo(platform.ControlUser, env[platform.EnvControlPassword])))
	defer rpc.Close()
	sess, err := control.NewSession(control.SessionConfig{WorkspaceID: wire.WorkspaceID, AgentID: wire.AgentID, RPC: rpc, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 30*time.Second, func() error {
		if !sess.Ping(ctx) {
			return errors.New("agent not answering")
		}
		return nil
	})
	acancel()
	if err := <-adone; err != nil {
		t.Fatal(err)
	}
	cancel()
	if code := <-exit; code != 0 {
		t.Fatalf("exit %d after the context ended", code)
	}
}

func TestPlatformCommandUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"no NATS", nil, nil, "-nats-url is required"},
		{"no secrets", []string{"-nats-url", "nats://127.0.0.1:1"}, nil, "missing secret"},
		{"bad replicas env", []string{"-nats-url", "nats://127.0.0.1:1"}, map[string]string{"OPENGENI_KV_REPLICAS": "three"}, "not a number"},
		{"zero replicas", []string{"-nats-url", "nats://127.0.0.1:1", "-replicas", "0"}, nil, "at least 1"},
		{"extra argument", []string{"-nats-url", "nats://127.0.0.1:1", "now"}, nil, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("OPENGENI_NATS_URL", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errb bytes.Buffer
			if code := run(append([]string{"platform"}, tc.args...), &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q, want 2 and %q", code, errb.String(), tc.want)
			}
		})
	}
}
