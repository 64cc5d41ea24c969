package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
	"github.com/opengeni/opengeni-agent/relay/token"
)

func quietLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("DEVSTACK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startPlatform(t *testing.T, dataDir string, out io.Writer) *Platform {
	t.Helper()
	p, err := StartPlatform(t.Context(), PlatformOptions{DataDir: dataDir, NATSPort: -1, HTTPPort: -1, Out: out, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

type runningAgent struct {
	t      *testing.T
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func runAgent(t *testing.T, c *config.Credentials) *runningAgent {
	t.Helper()
	a, err := agent.New(agent.Options{
		Servers: c.NATSURLs, Token: c.NATSBearer, WorkspaceID: c.WorkspaceID, AgentID: c.AgentID,
		WorkspaceRoot: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: 2 * time.Second,
		Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{t: t, a: a, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = a.Run(ctx); close(r.done) }()
	t.Cleanup(r.stop)
	return r
}

func (r *runningAgent) stop() {
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			r.t.Errorf("agent: %v", r.err)
		}
	case <-time.After(15 * time.Second):
		r.t.Error("agent did not stop within 15s")
	}
}

func session(t *testing.T, f control.ConnFactory, c *config.Credentials) *control.Session {
	t.Helper()
	rpc := control.NewNATSRPC(f)
	t.Cleanup(rpc.Close)
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: c.WorkspaceID, AgentID: c.AgentID, RPC: rpc, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func perm0600(t *testing.T, paths ...string) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
}

// agentConns counts the server's client connections serving an agent's
// rpc subject (agents connect named by their connection instance).
func agentConns(t *testing.T, p *Platform, agentID string) int {
	t.Helper()
	cz, err := p.Server().Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cz.Conns {
		if strings.HasPrefix(c.Name, subject.ConnectionNamePrefix) && slices.ContainsFunc(c.Subs, func(s string) bool {
			return strings.HasSuffix(s, "."+agentID+".rpc")
		}) {
			n++
		}
	}
	return n
}

var userCodeLine = regexp.MustCompile(`user code (\S+) \(approved automatically`)

func TestPlatformEndToEnd(t *testing.T) {
	root := t.TempDir()
	dataDir, cfgDir := filepath.Join(root, "data"), filepath.Join(root, "agent")
	ctx := t.Context()
	t0 := time.Now()

	// ---- first run: pair through the device flow, drive the machine ----
	out1 := &syncbuf.Buffer{}
	p1 := startPlatform(t, dataDir, out1)
	if !strings.Contains(out1.String(), p1.AdminToken()) {
		t.Fatalf("admin token not printed: %q", out1.String())
	}
	perm0600(t, filepath.Join(dataDir, PlatformStateFile), filepath.Join(dataDir, AdminTokenFile), p1.CtlFile())
	if fi, err := os.Stat(dataDir); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %v", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(dataDir, JetStreamDir)); err != nil {
		t.Fatalf("JetStream store not under the data dir: %v", err)
	}
	// The admin routes want the admin token.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p1.APIURL()+"/v1/workspaces/"+p1.WorkspaceID()+"/enrollments", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated list: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	creds, err := p1.EnrollLocalMachine(ctx, cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	m := userCodeLine.FindStringSubmatch(out1.String())
	if m == nil {
		t.Fatalf("user code not printed: %q", out1.String())
	}
	t.Logf("paired with user code %s as agent %s", m[1], creds.AgentID)
	if creds.WorkspaceID != p1.WorkspaceID() || !strings.HasPrefix(creds.NATSBearer, "oge_") ||
		len(creds.NATSURLs) != 1 || creds.NATSURLs[0] != p1.NATSURL() {
		t.Fatalf("credentials %+v", creds)
	}
	// Saved with agent/config, 0600.
	saved, err := config.NewStore(cfgDir).Load(creds.ID())
	if err != nil || saved.NATSBearer != creds.NATSBearer || saved.AgentID != creds.AgentID {
		t.Fatalf("saved credentials %+v %v", saved, err)
	}
	perm0600(t, config.NewStore(cfgDir).Path(creds.ID()))
	// The approval went through the API: the store has the device request
	// consumed and the enrollment active.
	if e, err := p1.Store().GetEnrollment(ctx, creds.WorkspaceID, creds.AgentID); err != nil || !e.Active() {
		t.Fatalf("enrollment %+v %v", e, err)
	}
	// ctl.json names the paired machine.
	ctl, err := ReadCtlFile(dataDir)
	if err != nil || ctl.AgentID != creds.AgentID || ctl.WorkspaceID != creds.WorkspaceID || ctl.NATSURL != p1.NATSURL() {
		t.Fatalf("ctl.json %+v %v", ctl, err)
	}

	ag := runAgent(t, creds)
	sess := session(t, ctl.ConnFactory(), creds) // as `relay ctl` would
	natstest.Eventually(t, 10*time.Second, func() error {
		if !sess.Ping(ctx) {
			return errors.New("agent not answering")
		}
		return nil
	})
	res, err := sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"echo hello-platform"}, Shell: true})
	if err != nil || !strings.Contains(string(res.GetStdout()), "hello-platform") || res.GetExitCode() != 0 {
		t.Fatalf("exec: %v %v", res, err)
	}
	// Heartbeats reach the store through ingestion.
	natstest.Eventually(t, 10*time.Second, func() error {
		mach, err := p1.Store().GetMachine(ctx, creds.WorkspaceID, creds.AgentID)
		if err != nil {
			return err
		}
		if mach.Heartbeat == nil || mach.Heartbeat.Seq < 3 || mach.LastSeenAt == nil || mach.LatestMetrics == nil || mach.HelloAt == nil {
			return fmt.Errorf("machine %+v", mach)
		}
		l, err := p1.Store().Liveness(ctx, creds.WorkspaceID, creds.AgentID, sess.Ping(ctx))
		if err != nil || l.State != control.StateOnline {
			return fmt.Errorf("liveness %+v %v", l, err)
		}
		return nil
	})
	// An agent is confined to its subjects: no JetStream (the store lives in
	// its account).
	anc, err := nats.Connect(p1.NATSURL(), nats.Token(creds.NATSBearer), nats.NoReconnect(),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("bearer connect: %v", err)
	}
	ajs, _ := jetstream.New(anc)
	actx, cancel := context.WithTimeout(ctx, time.Second)
	if _, err := ajs.AccountInfo(actx); err == nil {
		t.Error("an agent reached the JetStream API")
	}
	cancel()
	anc.Close()

	t.Logf("%v: first run served", time.Since(t0))
	ag.stop()
	natstest.Eventually(t, 5*time.Second, func() error {
		mach, err := p1.Store().GetMachine(ctx, creds.WorkspaceID, creds.AgentID)
		if err != nil || mach.WentOfflineAt == nil {
			return fmt.Errorf("not offline: %+v %v", mach, err)
		}
		return nil
	})
	adminToken, ws := p1.AdminToken(), p1.WorkspaceID()
	p1.Close()

	// ---- second run on the same data dir: state persisted ----
	out2 := &syncbuf.Buffer{}
	p2 := startPlatform(t, dataDir, out2)
	if p2.AdminToken() != adminToken || p2.WorkspaceID() != ws {
		t.Fatalf("state not persisted: token %q→%q ws %q→%q", adminToken, p2.AdminToken(), ws, p2.WorkspaceID())
	}
	// The token was shown once, at creation; a restart says where it is.
	if strings.Contains(out2.String(), adminToken) || !strings.Contains(out2.String(), p2.AdminTokenFile()) {
		t.Fatalf("restart output reprints the admin token or hides where it is: %q", out2.String())
	}
	if _, err := p2.Store().GetEnrollment(ctx, ws, creds.AgentID); err != nil {
		t.Fatalf("enrollment lost across restart: %v", err)
	}
	creds2, err := p2.EnrollLocalMachine(ctx, cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	if userCodeLine.MatchString(out2.String()) {
		t.Fatalf("paired again instead of reusing credentials: %q", out2.String())
	}
	if creds2.AgentID != creds.AgentID || creds2.NATSBearer != creds.NATSBearer || creds2.NATSURLs[0] != p2.NATSURL() {
		t.Fatalf("reused credentials %+v", creds2)
	}
	if conns, _ := config.NewStore(cfgDir).List(); len(conns) != 1 {
		t.Fatalf("connections after restart: %d", len(conns))
	}
	// The first run's bearer, unchanged, connects to the new server.
	old := *creds
	old.NATSURLs = []string{p2.NATSURL()}
	ag2 := runAgent(t, &old)
	sess2 := session(t, p2.ControlConnFactory(), creds2)
	natstest.Eventually(t, 10*time.Second, func() error {
		if !sess2.Ping(ctx) {
			return errors.New("agent not answering after restart")
		}
		return nil
	})
	if n := agentConns(t, p2, creds.AgentID); n != 1 {
		t.Fatalf("agent connections before revoke: %d", n)
	}
	if r, err := sess2.Exec(ctx, control.ExecOptions{Cmd: "echo again"}); err != nil || !strings.Contains(r.Stdout, "again") {
		t.Fatalf("exec after restart: %+v %v", r, err)
	}

	t.Logf("%v: second run served", time.Since(t0))
	// ---- revoking through the API cuts the agent off ----
	if ok, err := p2.RevokeEnrollment(ctx, creds.AgentID); err != nil || !ok {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := agentConns(t, p2, creds.AgentID); n != 0 {
			return fmt.Errorf("revoked agent still has %d connection(s)", n)
		}
		if sess2.Ping(ctx) {
			return errors.New("revoked agent still answers")
		}
		return nil
	})
	if nc, err := nats.Connect(p2.NATSURL(), nats.Token(creds.NATSBearer), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("revoked bearer connected")
	} else if !regexp.MustCompile(`(?i)authoriz`).MatchString(err.Error()) {
		t.Fatalf("revoked bearer: %v", err)
	}
	if e, _ := p2.Store().GetEnrollment(ctx, ws, creds.AgentID); e.Active() {
		t.Fatal("enrollment still active")
	}
	t.Logf("%v: revoked agent cut off", time.Since(t0))
	// A revoked enrollment is not reused: pairing runs again and the same
	// identity key re-activates the same agent id.
	creds3, err := p2.EnrollLocalMachine(ctx, cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	if !userCodeLine.MatchString(out2.String()) || creds3.AgentID != creds.AgentID {
		t.Fatalf("re-pair: %+v %q", creds3, out2.String())
	}
	// The bearer from before the revocation stays dead (a new credential
	// generation); the still-running agent keeps being refused, and an
	// agent on the new credentials is served.
	if creds3.NATSBearer == creds.NATSBearer {
		t.Fatal("re-pairing returned the revoked bearer")
	}
	if nc, err := nats.Connect(p2.NATSURL(), nats.Token(creds.NATSBearer), nats.NoReconnect(), nats.Timeout(3*time.Second)); err == nil {
		nc.Close()
		t.Fatal("the bearer from before the revocation connected after re-activation")
	}
	ag2.stop()
	ag3 := runAgent(t, creds3)
	natstest.Eventually(t, 30*time.Second, func() error {
		if !sess2.Ping(ctx) || agentConns(t, p2, creds.AgentID) != 1 {
			return errors.New("re-activated agent not back")
		}
		return nil
	})
	t.Logf("%v: re-activated agent back", time.Since(t0))
	ag3.stop()
}

// The store runs on the platform's own server: JetStream is on for the APP
// account (config-defined accounts otherwise have none) and survives a
// restart.
func TestPlatformJetStreamPersists(t *testing.T) {
	dataDir := t.TempDir()
	p := startPlatform(t, dataDir, nil)
	e, err := p.Store().UpsertEnrollment(t.Context(), store.FinalizeInput{WorkspaceID: p.WorkspaceID(), Pubkey: "pk", OS: "linux"})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	p = startPlatform(t, dataDir, nil)
	got, err := p.Store().GetEnrollment(t.Context(), p.WorkspaceID(), e.ID)
	if err != nil || got.ID != e.ID || !got.Active() {
		t.Fatalf("after restart: %+v %v", got, err)
	}
}

func TestPlatformRejectsBadWorkspace(t *testing.T) {
	if _, err := StartPlatform(t.Context(), PlatformOptions{DataDir: t.TempDir(), WorkspaceID: "dev"}); err == nil {
		t.Fatal("non-UUID workspace accepted")
	}
}

// A relay started after the platform: SetRelayURL makes pairings (and
// reused credentials) carry the relay and an ogr_ token the relay verifies
// with the persisted RelayTokenSecret.
func TestPlatformRelayCredentials(t *testing.T) {
	dataDir, cfgDir := t.TempDir(), t.TempDir()
	p := startPlatform(t, dataDir, nil)
	c, err := p.EnrollLocalMachine(t.Context(), cfgDir)
	if err != nil {
		t.Fatal(err)
	}
	if c.RelayURL != "" || c.RelayToken != "" {
		t.Fatalf("relay handed out without one: %+v", c)
	}
	const relayURL = "ws://127.0.0.1:8443/stream"
	if err := p.SetRelayURL(relayURL); err != nil {
		t.Fatal(err)
	}
	c2, err := p.EnrollLocalMachine(t.Context(), cfgDir) // reused, refreshed
	if err != nil {
		t.Fatal(err)
	}
	claims, err := token.VerifyAgent(p.RelayTokenSecret(), c2.RelayToken, time.Now())
	if c2.RelayURL != relayURL || err != nil || claims.AgentID != c.AgentID || claims.WorkspaceID != c.WorkspaceID {
		t.Fatalf("relay credentials %+v %+v %v", c2, claims, err)
	}
	// A fresh pairing (another install) gets them from the API itself.
	c3, err := p.EnrollLocalMachine(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := token.VerifyAgent(p.RelayTokenSecret(), c3.RelayToken, time.Now()); err != nil || c3.RelayURL != relayURL || c3.AgentID == c.AgentID {
		t.Fatalf("fresh pairing %+v %v", c3, err)
	}
}

func TestPlatformDataDirDefault(t *testing.T) {
	t.Setenv(EnvDevData, "/tmp/x-opengeni-dev")
	if d, err := PlatformDataDir(); err != nil || d != "/tmp/x-opengeni-dev" {
		t.Fatalf("%q %v", d, err)
	}
	t.Setenv(EnvDevData, "")
	if d, err := PlatformDataDir(); err == nil && filepath.Base(d) != "opengeni-dev" {
		t.Fatalf("%q", d)
	}
}
