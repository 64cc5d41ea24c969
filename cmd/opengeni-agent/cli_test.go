package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/agent/instancelock"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// isolate points the config dir at a temp dir and clears the env the CLI reads.
func isolate(t *testing.T) *config.Store {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cfg")
	t.Setenv("OPENGENI_CONFIG_DIR", dir)
	for _, k := range []string{"OPENGENI_API_URL", "OPENGENI_WORKSPACE_ID", "OPENGENI_ENROLL_TOKEN"} {
		t.Setenv(k, "")
	}
	globalAPIURL = ""
	t.Cleanup(func() { globalAPIURL = "" })
	return config.NewStore(dir)
}

func TestTakeGlobalFlags(t *testing.T) {
	tests := []struct {
		args []string
		rest []string
		api  string
	}{
		{[]string{"--api-url", "https://x", "run"}, []string{"run"}, "https://x"},
		{[]string{"run", "--api-url=https://y", "--channel", "beta"}, []string{"run", "--channel", "beta"}, "https://y"},
		{[]string{"-api-url", "https://z", "connect"}, []string{"connect"}, "https://z"},
		{[]string{"run", "--", "--api-url", "q"}, []string{"run", "--", "--api-url", "q"}, ""},
		{nil, []string{}, ""},
	}
	for _, tt := range tests {
		globalAPIURL = ""
		rest, err := takeGlobalFlags(tt.args)
		if err != nil || strings.Join(rest, " ") != strings.Join(tt.rest, " ") || globalAPIURL != tt.api {
			t.Errorf("takeGlobalFlags(%q) = %q, %v, api %q", tt.args, rest, err, globalAPIURL)
		}
	}
	if _, err := takeGlobalFlags([]string{"run", "--api-url"}); err == nil {
		t.Error("dangling --api-url accepted")
	}
	globalAPIURL = ""
}

func TestAPIURLPrecedence(t *testing.T) {
	isolate(t)
	if apiURL() != defaultAPIURL {
		t.Fatal(apiURL())
	}
	t.Setenv("OPENGENI_API_URL", "https://env.example")
	if apiURL() != "https://env.example" {
		t.Fatal(apiURL())
	}
	globalAPIURL = "https://flag.example"
	if apiURL() != "https://flag.example" {
		t.Fatal(apiURL())
	}
}

func TestEnrollParsesFlags(t *testing.T) {
	isolate(t)
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(*testing.T, enrollParams)
	}{
		{"channel workspace force", []string{"--channel", "beta", "--workspace-id", "11111111-1111-1111-1111-111111111111", "--force"}, nil, func(t *testing.T, p enrollParams) {
			if p.Channel != "beta" || p.WorkspaceID != "11111111-1111-1111-1111-111111111111" || !p.Force {
				t.Fatalf("%+v", p)
			}
		}},
		{"token non-interactive", []string{"--token", "tok-123", "--non-interactive"}, nil, func(t *testing.T, p enrollParams) {
			if p.Token != "tok-123" || !p.NonInteractive || p.Channel != "stable" {
				t.Fatalf("%+v", p)
			}
		}},
		{"env token and workspace", nil, map[string]string{"OPENGENI_ENROLL_TOKEN": "oget_env", "OPENGENI_WORKSPACE_ID": "ws-env"}, func(t *testing.T, p enrollParams) {
			if p.Token != "oget_env" || p.WorkspaceID != "ws-env" {
				t.Fatalf("%+v", p)
			}
		}},
		{"flag beats env", []string{"--token", "oget_flag"}, map[string]string{"OPENGENI_ENROLL_TOKEN": "oget_env"}, func(t *testing.T, p enrollParams) {
			if p.Token != "oget_flag" {
				t.Fatalf("%+v", p)
			}
		}},
		{"machine name", []string{"--machine-name", "box"}, nil, func(t *testing.T, p enrollParams) {
			if p.MachineName != "box" || p.APIURL != defaultAPIURL {
				t.Fatalf("%+v", p)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			p, err := parseEnrollFlags("enroll", tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, p)
		})
	}
	if _, err := parseEnrollFlags("enroll", []string{"--bogus"}, io.Discard); err == nil || flagExit(err) != 2 {
		t.Fatalf("unknown flag: %v", err)
	}
	if _, err := parseEnrollFlags("enroll", []string{"-h"}, io.Discard); flagExit(err) != 0 {
		t.Fatalf("-h: %v", err)
	}
}

func TestHelpNeverPrintsTheEnvToken(t *testing.T) {
	isolate(t)
	t.Setenv("OPENGENI_ENROLL_TOKEN", "oget_supersecret")
	var out bytes.Buffer
	_, _ = parseEnrollFlags("enroll", []string{"-h"}, &out)
	if strings.Contains(out.String(), "supersecret") {
		t.Fatalf("help leaks the token:\n%s", out.String())
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	conn := fs.String("connection", "", "")
	pos, err := parseInterspersed(fs, []string{"screen-control", "--connection", "abc", "on"})
	if err != nil || strings.Join(pos, " ") != "screen-control on" || *conn != "abc" {
		t.Fatalf("%q %v %q", pos, err, *conn)
	}
}

func TestBareInvocationNotEnrolledPrintsHelpAndExitsZero(t *testing.T) {
	isolate(t)
	var stdout, stderr bytes.Buffer
	if code := run(nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(stderr.String(), "Usage:") || !strings.Contains(stderr.String(), notEnrolledMessage) || stdout.Len() != 0 {
		t.Fatalf("stdout %q stderr %q", stdout.String(), stderr.String())
	}
	// A malformed legacy file is "not enrolled" too, never a hang or a crash.
	s, _ := config.OpenDefault()
	_ = os.MkdirAll(s.Dir(), 0o700)
	_ = os.WriteFile(s.LegacyPath(), []byte("{"), 0o600)
	stderr.Reset()
	if code := run(nil, &stdout, &stderr); code != 0 || !strings.Contains(stderr.String(), notEnrolledMessage) {
		t.Fatalf("exit %d stderr %q", code, stderr.String())
	}
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	isolate(t)
	if code := run([]string{"frobnicate"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("exit %d", code)
	}
}

// --- an enrollment API double ---------------------------------------------

const wsA = "aaaaaaaa-0000-0000-0000-00000000000a"

type fakeAPI struct {
	srv     *httptest.Server
	natsURL string
	mu      sync.Mutex
	polls   int
	bodies  []map[string]any
	pubkeys []string
}

func newFakeAPI(t *testing.T, natsURL string) *fakeAPI {
	f := &fakeAPI{natsURL: natsURL}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		f.bodies = append(f.bodies, body)
		if pk, ok := body["publicKey"].(string); ok {
			f.pubkeys = append(f.pubkeys, pk)
		}
		creds := func(ws, screen string) string {
			return `{"agentId":"agent-` + ws[:8] + `","workspaceId":"` + ws + `","bearer":"oge_test","natsUrls":["` + f.natsURL +
				`"],"relayUrl":"","relayToken":"ogr_x","updatePublicKey":"","consentedWholeMachine":true,"consentedScreenControl":` + screen + `}`
		}
		switch r.URL.Path {
		case enroll.PathDeviceStart:
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"userCode":"WXYZ-2345","deviceCode":"dc","verificationUri":"`+f.srv.URL+`/device","verificationUriComplete":"","intervalSeconds":1,"expiresInSeconds":600}`)
		case enroll.PathDevicePoll:
			f.polls++
			if f.polls < 2 {
				_, _ = io.WriteString(w, `{"state":"pending"}`)
				return
			}
			_, _ = io.WriteString(w, `{"state":"authorized","credentials":`+creds(body["deviceCode"].(string)+"-"+wsA[3:], "false")+`}`)
		case enroll.PathTokenExchange:
			tok, _ := body["token"].(string)
			ws, ok := enroll.TokenWorkspaceID(tok)
			if !ok {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"error":"invalid or expired enroll token"}`)
				return
			}
			w.WriteHeader(http.StatusCreated)
			_, _ = io.WriteString(w, `{"credentials":`+creds(ws, "true")+`}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func enrollToken(ws string) string {
	return "oget_" + base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"enroll","workspaceId":"`+ws+`"}`)) + ".sig"
}

// noSleep makes the device flow instant (its intervals are tested in agent/enroll).
func noSleep(t *testing.T) {
	prev := newEnrollClient
	newEnrollClient = func(api string, prompt io.Writer, logger *slog.Logger) *enroll.Client {
		c := prev(api, prompt, logger)
		c.Sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
		return c
	}
	t.Cleanup(func() { newEnrollClient = prev })
}

func startNATS(t *testing.T, token string) *server.Server {
	return natstest.Start(t, func(o *server.Options) { o.Authorization = token })
}

func TestConnectDeviceFlowThenListConsentDisconnect(t *testing.T) {
	store := isolate(t)
	noSleep(t)
	ns := startNATS(t, "oge_test")
	api := newFakeAPI(t, ns.ClientURL())

	var stdout, stderr bytes.Buffer
	code := run([]string{"connect", "--api-url", api.srv.URL, "--workspace-id", "dc-" + wsA[3:], "--machine-name", "box"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("connect exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "  To authorize this machine, visit:\n      "+api.srv.URL+"/device\n  and enter the code:\n      WXYZ-2345\n") ||
		!strings.HasSuffix(stdout.String(), "Enrolled. This machine is now registered with OpenGeni.\n") {
		t.Fatalf("stdout:\n%s", stdout.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), "oge_test") || strings.Contains(stdout.String()+stderr.String(), "ogr_x") {
		t.Fatal("a secret was printed or logged")
	}
	conns, _ := store.List()
	if len(conns) != 1 || conns[0].Err != nil {
		t.Fatalf("connections %+v", conns)
	}
	c := conns[0]
	if c.Creds.NATSBearer != "oge_test" || c.Creds.UpdateChannel != "stable" || c.Creds.ConsentedScreenControl {
		t.Fatalf("creds %+v", c.Creds)
	}
	if runtime.GOOS != "windows" {
		st, _ := os.Stat(c.Path)
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("mode %o", st.Mode().Perm())
		}
	}
	start := api.bodies[0]
	if start["machineName"] != "box" || start["os"] != enroll.HostOS() || start["requestsScreenControl"] != false || len(api.pubkeys[0]) != 43 {
		t.Fatalf("start body %v", start)
	}

	// Running `connect` again is idempotent: no new flow.
	before := len(api.bodies)
	if code := run([]string{"--api-url", api.srv.URL, "connect", "--workspace-id", "dc-" + wsA[3:]}, io.Discard, io.Discard); code != 0 || len(api.bodies) != before {
		t.Fatalf("re-connect exit %d, %d new requests", code, len(api.bodies)-before)
	}
	// --force re-enrolls with the SAME durable install key.
	api.mu.Lock()
	api.polls = 0
	api.mu.Unlock()
	if code := run([]string{"--api-url", api.srv.URL, "connect", "--workspace-id", "dc-" + wsA[3:], "--force"}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("--force exit %d", code)
	}
	if api.pubkeys[0] != api.pubkeys[len(api.pubkeys)-1] {
		t.Fatal("--force generated a new install key")
	}

	// Zero-click token for a second workspace.
	wsB := "bbbbbbbb-0000-0000-0000-00000000000b"
	stdout.Reset()
	if code := run([]string{"--api-url", api.srv.URL, "connect", "--token", enrollToken(wsB), "--non-interactive", "--channel", "beta"}, &stdout, io.Discard); code != 0 {
		t.Fatalf("token connect exit %d", code)
	}
	if strings.Contains(stdout.String(), "To authorize") {
		t.Fatal("token path printed a device prompt")
	}
	idB := config.ConnectionID(api.srv.URL, wsB)
	cb, err := store.Load(idB)
	if err != nil || cb.UpdateChannel != "beta" || !cb.ConsentedScreenControl {
		t.Fatalf("token creds %+v %v", cb, err)
	}
	// A bad token fails with the server's message.
	stderr.Reset()
	if code := run([]string{"--api-url", api.srv.URL, "connect", "--token", "oget_garbage", "--force"}, io.Discard, &stderr); code != 1 ||
		!strings.Contains(stderr.String(), "HTTP 401") || strings.Contains(stderr.String(), "oget_garbage") {
		t.Fatalf("bad token exit %d: %s", code, stderr.String())
	}

	// connections lists both, without secrets.
	stdout.Reset()
	if code := run([]string{"connections"}, &stdout, io.Discard); code != 0 {
		t.Fatal("connections failed")
	}
	if !strings.Contains(stdout.String(), c.ID) || !strings.Contains(stdout.String(), idB) || strings.Contains(stdout.String(), "oge_") {
		t.Fatalf("connections:\n%s", stdout.String())
	}

	// consent: ambiguous without --connection, then live.
	if code := run([]string{"consent", "screen-control", "on"}, io.Discard, io.Discard); code != 1 {
		t.Fatalf("ambiguous consent exit %d", code)
	}
	if _, sc := store.Consent(c.ID); sc {
		t.Fatal("consent already on")
	}
	if code := run([]string{"consent", "screen-control", "on", "--connection", c.ID[:5]}, io.Discard, io.Discard); code != 0 {
		t.Fatal("consent on failed")
	}
	if _, sc := store.Consent(c.ID); !sc {
		t.Fatal("consent on not seen live")
	}
	if code := run([]string{"consent", "screen-control", "maybe"}, io.Discard, io.Discard); code != 2 {
		t.Fatal("bad consent value accepted")
	}

	// disconnect publishes GoingOffline USER_STOP with the stored bearer.
	nc := natstest.Connect(t, ns, nats.Token("oge_test"))
	sub, _ := nc.SubscribeSync(c.Creds.Subject("events"))
	_ = nc.Flush()
	stdout.Reset()
	if code := run([]string{"disconnect", c.ID[:6]}, &stdout, io.Discard); code != 0 {
		t.Fatalf("disconnect exit %d", code)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal("no going_offline:", err)
	}
	var ev agentpb.AgentEvent
	if err := proto.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetAgentId() != c.Creds.AgentID || ev.GetGoingOffline().GetReason() != agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP {
		t.Fatalf("event %v", &ev)
	}
	if _, err := store.Load(c.ID); err == nil {
		t.Fatal("connection file still there")
	}
	if code := run([]string{"disconnect", "nope"}, io.Discard, io.Discard); code != 1 {
		t.Fatal("disconnect of nothing succeeded")
	}
}

func TestDisconnectWithUnreachableNATSStillRemoves(t *testing.T) {
	store := isolate(t)
	goingOfflineTimeout = 500 * time.Millisecond
	t.Cleanup(func() { goingOfflineTimeout = 5 * time.Second })
	c := &config.Credentials{AgentID: "a1", WorkspaceID: "w1", NATSBearer: "oge_x", NATSURLs: []string{"nats://127.0.0.1:1"},
		ConsentedWholeMachine: true, UpdateChannel: "stable", APIURL: "https://api.test"}
	if _, err := store.Save(c); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"disconnect", "w1"}, io.Discard, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(stderr.String(), "warning") || strings.Contains(stderr.String(), "oge_x") {
		t.Fatalf("stderr %q", stderr.String())
	}
	if store.Enrolled() {
		t.Fatal("not removed")
	}
}

func TestEnrollDecisionErrors(t *testing.T) {
	store := isolate(t)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		p    enrollParams
		want string
	}{
		{enrollParams{APIURL: "https://api.test", NonInteractive: true}, "--non-interactive requires --token"},
		{enrollParams{APIURL: "https://api.test"}, "enrollment requires a workspace id"},
		{enrollParams{APIURL: "not a url", WorkspaceID: "w"}, "invalid API URL"},
	}
	for _, tt := range tests {
		if _, err := enrollConnection(ctx, store, tt.p, io.Discard, log); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: err %v, want %q", tt.p, err, tt.want)
		}
	}
	// A malformed file for the target identity is an error, not a re-enroll.
	id := config.ConnectionID("https://api.test", "w")
	_ = os.MkdirAll(store.ConnectionsDir(), 0o700)
	_ = os.WriteFile(store.Path(id), []byte("{"), 0o600)
	if _, err := enrollConnection(ctx, store, enrollParams{APIURL: "https://api.test", WorkspaceID: "w"}, io.Discard, log); err == nil ||
		!strings.Contains(err.Error(), "malformed credentials file") {
		t.Fatalf("malformed: %v", err)
	}
}

// --- run: serving every stored connection ---------------------------------

func saveConn(t *testing.T, store *config.Store, ws, natsURL string) *config.Credentials {
	t.Helper()
	c := &config.Credentials{AgentID: "agent-" + ws, WorkspaceID: ws, NATSBearer: "oge_test", NATSURLs: []string{natsURL},
		ConsentedWholeMachine: true, UpdateChannel: "stable", APIURL: "https://api.test"}
	if _, err := store.Save(c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRunExitsZeroWhenAnotherInstanceServes(t *testing.T) {
	store := isolate(t)
	c := saveConn(t, store, "ws-a", "nats://127.0.0.1:1")
	held, err := instancelock.Acquire(store.LockPath(c.ID()))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	var stderr bytes.Buffer
	code := runStored(context.Background(), store, storedRunOptions{}, io.Discard, &stderr, slog.New(slog.DiscardHandler))
	want := "opengeni-agent is already running (pid " + itoa(os.Getpid()) + ") — this instance will exit\n"
	if code != 0 || stderr.String() != want {
		t.Fatalf("exit %d stderr %q, want %q", code, stderr.String(), want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// TestRunServesStoredConnectionsEndToEnd: run with no --nats-url serves the
// stored connection over a real NATS server with the bearer as token;
// removing the file (disconnect) makes it announce GoingOffline and stop.
func TestRunServesStoredConnectionsEndToEnd(t *testing.T) {
	store := isolate(t)
	ns := startNATS(t, "oge_test")
	c := saveConn(t, store, "ws-e2e", ns.ClientURL())
	nc := natstest.Connect(t, ns, nats.Token("oge_test"))
	hello, _ := nc.SubscribeSync(c.Subject("hello"))
	events, _ := nc.SubscribeSync(c.Subject("events"))
	_ = nc.Flush()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- runStored(ctx, store, storedRunOptions{}, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
	}()
	msg, err := hello.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal("no hello:", err)
	}
	var h agentpb.Hello
	_ = proto.Unmarshal(msg.Data, &h)
	if h.GetAgentId() != c.AgentID || !h.GetCapabilities().GetConsentedWholeMachine() || h.GetCapabilities().GetConsentedScreenControl() {
		t.Fatalf("hello %v", &h)
	}
	// The agent answers a ping on its rpc subject.
	req, _ := proto.Marshal(&agentpb.ControlRequest{RequestId: "r1", Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: 7}}})
	rep, err := nc.Request(c.Subject("rpc"), req, 5*time.Second)
	if err != nil {
		t.Fatal("ping:", err)
	}
	var resp agentpb.ControlResponse
	_ = proto.Unmarshal(rep.Data, &resp)
	if resp.GetPing().GetNonce() != 7 {
		t.Fatalf("ping reply %v", &resp)
	}
	if err := store.Remove(c.ID()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, err := events.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatal("no going_offline after disconnect:", err)
		}
		var ev agentpb.AgentEvent
		_ = proto.Unmarshal(m.Data, &ev)
		if g := ev.GetGoingOffline(); g != nil {
			if g.GetReason() != agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP || !strings.Contains(g.GetMessage(), "disconnect") {
				t.Fatalf("going offline %v", g)
			}
			break
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run exit %d", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
}

// `status` shows each served connection's live link: connected to the
// server, or retrying with the last error while NATS is unreachable.
func TestStatusShowsLiveLinkState(t *testing.T) {
	store := isolate(t)
	ns := startNATS(t, "oge_test")
	up := saveConn(t, store, "ws-up", ns.ClientURL())
	dead := saveConn(t, store, "ws-dead", "nats://127.0.0.1:1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- runStored(ctx, store, storedRunOptions{}, io.Discard, io.Discard, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()
	var out string
	natstest.Eventually(t, 20*time.Second, func() error {
		var stdout, stderr bytes.Buffer
		cmdStatus(nil, &stdout, &stderr)
		out = stdout.String()
		for _, want := range []string{up.ID() + " ", "connected to nats://127.0.0.1:", "retrying since", "connection refused"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("status lacks %q:\n%s", want, out)
			}
		}
		return nil
	})
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, dead.ID()) && !strings.Contains(line, "retrying since") {
			t.Fatalf("the dead connection's line: %q", line)
		}
		if strings.HasPrefix(line, up.ID()) && !strings.Contains(line, "connected to") {
			t.Fatalf("the live connection's line: %q", line)
		}
	}
}
