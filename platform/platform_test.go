package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
)

const testWS = "6f1c1b9e-3c43-4f55-9a43-0c1d2c3b4a59"

func quietLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("PLATFORM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startEmbedded runs the platform on its own embedded server.
func startEmbedded(t testing.TB, mod ...func(*Options)) *Platform {
	t.Helper()
	o := Options{Secrets: freshSecrets(t), Embedded: EmbeddedNATS{Port: -1, StoreDir: t.TempDir()}, APIAddr: "127.0.0.1:0",
		Logger: quietLogger()}
	for _, m := range mod {
		m(&o)
	}
	p, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// startExternal runs the platform against the cluster c, R3.
func startExternal(t testing.TB, c *testCluster, s Secrets) *Platform {
	t.Helper()
	p, err := Start(context.Background(), Options{Secrets: s, NATSURLs: []string{strings.Join(c.urls(), ",")}, Replicas: 3,
		APIAddr: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// startClusterPlatform starts the shipped 3-node cluster and the platform
// on it.
func startClusterPlatform(t testing.TB) (*testCluster, *Platform) {
	t.Helper()
	s := freshSecrets(t)
	c := startCluster(t, s)
	return c, startExternal(t, c, s)
}

// pair enrolls a new machine through the real device flow (start, admin
// approve, poll) and returns its credentials.
func pair(t testing.TB, p *Platform) *config.Credentials {
	t.Helper()
	ctx := context.Background()
	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	client := &agentenroll.Client{BaseURL: p.APIURL(), UserAgent: "platform-test", Logger: quietLogger(),
		Sleep: func(ctx context.Context, d time.Duration) error {
			return backoff.SleepCtx(ctx, min(d, 50*time.Millisecond))
		}}
	start, err := client.Start(ctx, agentenroll.StartRequest{WorkspaceID: testWS, PublicKey: id.PublicKey(), OS: agentenroll.HostOS(), Arch: agentenroll.HostArch()})
	if err != nil {
		t.Fatalf("device start: %v", err)
	}
	var approved enroll.ApproveResponse
	if err := p.Admin().Do(ctx, http.MethodPost, ApprovePath(testWS), map[string]any{"userCode": start.UserCode}, &approved); err != nil {
		t.Fatalf("approve: %v", err)
	}
	wire, err := client.Poll(ctx, start)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return agentenroll.StoredCredentials(wire, p.APIURL(), "")
}

type runningAgent struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

// runAgent runs an in-process agent on c; onState sees its connection
// states.
func runAgent(t testing.TB, c *config.Credentials, onState func(agent.ConnState)) *runningAgent {
	t.Helper()
	a, err := agent.New(agent.Options{
		Servers: c.NATSURLs, Token: c.NATSBearer, WorkspaceID: c.WorkspaceID, AgentID: c.AgentID,
		WorkspaceRoot: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, DrainTimeout: 2 * time.Second,
		OnState: onState, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningAgent{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop within 15s")
		}
	})
	return r
}

// session drives the machine of c through f with a per-op deadline.
func session(t testing.TB, f control.ConnFactory, c *config.Credentials, timeout time.Duration) *control.Session {
	t.Helper()
	rpc := control.NewNATSRPC(f)
	t.Cleanup(rpc.Close)
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: c.WorkspaceID, AgentID: c.AgentID, RPC: rpc, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitPing(t testing.TB, s *control.Session) {
	t.Helper()
	natstest.Eventually(t, 30*time.Second, func() error {
		if !s.Ping(context.Background()) {
			return errors.New("agent not answering")
		}
		return nil
	})
}

// agentServers are the servers holding a client connection that serves
// agentID's rpc subject (agents connect named by their instance).
func agentServers(t testing.TB, agentID string, servers ...*server.Server) []*server.Server {
	t.Helper()
	var out []*server.Server
	for _, s := range servers {
		if !s.Running() {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{Subscriptions: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cz.Conns {
			if strings.HasPrefix(c.Name, subject.ConnectionNamePrefix) && slices.ContainsFunc(c.Subs, func(s string) bool {
				return strings.HasSuffix(s, "."+agentID+".rpc")
			}) {
				out = append(out, s)
			}
		}
	}
	return out
}

// The platform on its embedded server: an agent paired through the device
// flow connects through the callout, answers, and its heartbeats reach the
// store; a revocation kicks it through the system account; extra handlers
// share the API's HTTP server.
func TestEmbeddedPlatform(t *testing.T) {
	extra := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "console:"+r.URL.Path) })
	p := startEmbedded(t, func(o *Options) { o.Handlers = map[string]http.Handler{"/console/": extra} })
	ctx := t.Context()

	resp, err := http.Get(p.APIURL() + "/console/machines")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "console:/console/machines" {
		t.Fatalf("mounted handler answered %q", body)
	}
	// The enrollment API keeps the other paths (admin routes want the token).
	if resp, err := http.Get(p.APIURL() + "/v1/workspaces/" + testWS + "/enrollments"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("enrollment API behind the mux: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	creds := pair(t, p)
	if !slices.Equal(creds.NATSURLs, []string{p.NATSURL()}) {
		t.Fatalf("natsUrls %q, want the embedded server's", creds.NATSURLs)
	}
	runAgent(t, creds, nil)
	sess := session(t, p.ControlConnFactory(), creds, 10*time.Second)
	waitPing(t, sess)
	res, err := sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"echo", "embedded"}})
	if err != nil || strings.TrimSpace(string(res.GetStdout())) != "embedded" {
		t.Fatalf("exec: %v %v", res, err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		m, err := p.Store().GetMachine(ctx, creds.WorkspaceID, creds.AgentID)
		if err != nil || m.Heartbeat == nil || m.Heartbeat.Seq < 2 {
			return fmt.Errorf("no heartbeats stored: %+v %v", m, err)
		}
		return nil
	})
	if err := p.Admin().Do(ctx, http.MethodPost, RevokePath(creds.WorkspaceID, creds.AgentID), nil, nil); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if n := len(agentServers(t, creds.AgentID, p.Server())); n != 0 {
			return fmt.Errorf("revoked agent still connected (%d)", n)
		}
		return nil
	})
}

func TestStartRefusesBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Options)
		want error
	}{
		{"missing secrets", func(o *Options) { o.Secrets = Secrets{} }, ErrMissingSecret},
		{"user seed as callout issuer", func(o *Options) {
			o.Secrets.CalloutSeed = "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4"
		}, ErrBadSecret},
		{"conflicting handler", func(o *Options) {
			o.Handlers = map[string]http.Handler{"/": http.NotFoundHandler()}
		}, nil},
		{"replicas beyond one server", func(o *Options) { o.Replicas = 3 }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Secrets: freshSecrets(t), Embedded: EmbeddedNATS{Port: -1, StoreDir: t.TempDir()}, APIAddr: "127.0.0.1:0",
				Logger: quietLogger()}
			tc.mod(&o)
			p, err := Start(t.Context(), o)
			if err == nil {
				p.Close()
				t.Fatal("started")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// Every secret round-trips through the env file `relay platform secrets`
// writes, and the env file names the callout issuer the servers need.
func TestSecretsEnvRoundTrip(t *testing.T) {
	s := freshSecrets(t)
	env, err := s.Env()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(env), "\n") {
		k, v, _ := strings.Cut(l, "=")
		vars[k] = v
	}
	if got := SecretsFromEnv(func(k string) string { return vars[k] }); got != s {
		t.Fatalf("round trip: %+v != %+v", got, s)
	}
	if iss, _ := s.CalloutIssuer(); vars[EnvCalloutIssuer] != iss || !strings.HasPrefix(iss, "A") {
		t.Fatalf("issuer %q (%q)", vars[EnvCalloutIssuer], iss)
	}
	if err := (&Secrets{}).Validate(); !errors.Is(err, ErrMissingSecret) || !strings.Contains(err.Error(), EnvSigningSecret) {
		t.Fatalf("empty secrets: %v", err)
	}
}
