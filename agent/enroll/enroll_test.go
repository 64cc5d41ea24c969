package enroll

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const credsJSON = `{"agentId":"agent-1","workspaceId":"ws-1","bearer":"oge_bearer","subjectPrefix":"agent.ws-1.agent-1",
	"natsUrls":["wss://nats.example"],"relayUrl":"wss://relay.example/stream","relayToken":"ogr_producer",
	"natsAccountCreds":"oge_bearer","updatePublicKey":"RWQ","consentedWholeMachine":true,"consentedScreenControl":true}`

func TestJoinURLNormalizesSlashes(t *testing.T) {
	for _, tt := range []struct{ base, path string }{
		{"https://api.test/", "/enrollments/device/start"},
		{"https://api.test", "enrollments/device/start"},
		{"https://api.test//", "//enrollments/device/start"},
	} {
		if got := JoinURL(tt.base, tt.path); got != "https://api.test/enrollments/device/start" {
			t.Errorf("JoinURL(%q,%q) = %q", tt.base, tt.path, got)
		}
	}
}

func TestOSAndArchStrings(t *testing.T) {
	for in, want := range map[string]string{"linux": "linux", "darwin": "macos", "windows": "windows", "plan9": "unknown"} {
		if got := OSName(in); got != want {
			t.Errorf("OSName(%s) = %s", in, got)
		}
	}
	for in, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "unknown"} {
		if got := ArchName(in); got != want {
			t.Errorf("ArchName(%s) = %s", in, got)
		}
	}
}

func keys(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRequestsSerializeCamelCase(t *testing.T) {
	tests := []struct {
		name    string
		v       any
		present []string
		absent  []string
	}{
		{"start", StartRequest{WorkspaceID: "w", PublicKey: "k", OS: "linux", Arch: "x86_64", MachineName: "m"},
			[]string{"workspaceId", "publicKey", "os", "arch", "machineName", "canOfferDisplay", "requestsScreenControl"},
			[]string{"installFingerprint", "updateChannel", "offersDisplay", "exposure", "workspace_id"}},
		{"exchange", ExchangeRequest{Token: "oget_x", PublicKey: "k", OS: "macos", Arch: "aarch64", MachineName: "m"},
			[]string{"token", "publicKey", "os", "arch", "machineName", "canOfferDisplay", "requestsScreenControl"},
			[]string{"workspaceId", "exposure"}},
		{"exchange without machine name", ExchangeRequest{Token: "oget_x"},
			[]string{"token"}, []string{"machineName"}},
		{"poll", PollRequest{DeviceCode: "d"}, []string{"deviceCode"}, []string{"device_code"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := keys(t, tt.v)
			for _, k := range tt.present {
				if _, ok := m[k]; !ok {
					t.Errorf("key %s missing: %v", k, m)
				}
			}
			for _, k := range tt.absent {
				if _, ok := m[k]; ok {
					t.Errorf("key %s must not be sent: %v", k, m)
				}
			}
		})
	}
}

func TestStartResponseParsing(t *testing.T) {
	var r StartResponse
	if err := json.Unmarshal([]byte(`{"userCode":"ABCD-EFGH","deviceCode":"dc","verificationUri":"https://x/device"}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.IntervalSeconds != 5 || r.UserCode != "ABCD-EFGH" || r.DeviceCode != "dc" || r.ExpiresInSeconds != 0 || r.VerificationURIComplete != "" {
		t.Fatalf("defaults: %+v", r)
	}
	if err := json.Unmarshal([]byte(`{"userCode":"u","deviceCode":"d","verificationUri":"v","intervalSeconds":7,"expiresInSeconds":600}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.IntervalSeconds != 7 || r.ExpiresInSeconds != 600 {
		t.Fatalf("camelCase: %+v", r)
	}
	if err := json.Unmarshal([]byte(`{"userCode":"u","deviceCode":"d"}`), &r); err == nil {
		t.Fatal("missing verificationUri accepted")
	}
}

func TestPollResponseStates(t *testing.T) {
	for _, s := range []State{StatePending, StateAuthorized, StateDenied, StateExpired, StateDisabled, StateSlowDown} {
		var r PollResponse
		if err := json.Unmarshal([]byte(`{"state":"`+string(s)+`"}`), &r); err != nil || r.State != s {
			t.Errorf("state %s: %v %v", s, r.State, err)
		}
	}
	var r PollResponse
	if err := json.Unmarshal([]byte(`{"state":"PENDING"}`), &r); err == nil {
		t.Error("unknown state accepted")
	}
	if err := json.Unmarshal([]byte(`{"state":"authorized","credentials":`+credsJSON+`}`), &r); err != nil || r.Credentials == nil {
		t.Fatalf("authorized: %v %+v", err, r)
	}
}

func TestWireCredentialsConvertToConfig(t *testing.T) {
	var resp ExchangeResponse
	if err := json.Unmarshal([]byte(`{"credentials":`+credsJSON+`}`), &resp); err != nil {
		t.Fatal(err)
	}
	c := StoredCredentials(resp.Credentials, "https://api.test", "beta")
	if c.AgentID != "agent-1" || c.WorkspaceID != "ws-1" || c.NATSBearer != "oge_bearer" || len(c.NATSURLs) != 1 ||
		c.RelayURL != "wss://relay.example/stream" || c.RelayToken != "ogr_producer" || c.UpdatePubkey != "RWQ" ||
		!c.ConsentedWholeMachine || !c.ConsentedScreenControl || c.UpdateChannel != "beta" || c.ResumeToken != "" ||
		c.LastKnownEpoch != 0 || c.APIURL != "https://api.test" {
		t.Fatalf("converted: %+v", c)
	}
	var bare Credentials
	_ = json.Unmarshal([]byte(`{"agentId":"a","workspaceId":"w","bearer":"b"}`), &bare)
	if c := StoredCredentials(&bare, "https://x", ""); c.NATSURLs == nil || c.UpdateChannel != "stable" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestTokenWorkspaceID(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"enroll","workspaceId":"ws-9","exp":1}`))
	if ws, ok := TokenWorkspaceID("oget_" + payload + ".sig"); !ok || ws != "ws-9" {
		t.Fatalf("= %q %v", ws, ok)
	}
	for _, bad := range []string{"", "oge_" + payload + ".sig", "oget_" + payload, "oget_.sig", "oget_!!!.sig"} {
		if _, ok := TokenWorkspaceID(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

// fakeClock advances only when the client sleeps: intervals are asserted
// exactly, with no wall-clock timing.
type fakeClock struct {
	mu     sync.Mutex
	t      time.Time
	sleeps []time.Duration
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }

func (f *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	f.mu.Lock()
	f.sleeps = append(f.sleeps, d)
	f.t = f.t.Add(d)
	f.mu.Unlock()
	return ctx.Err()
}

// scripted is an enrollment server double: each poll answers with the next
// step and records the (fake) time it arrived.
type scripted struct {
	t        *testing.T
	clock    *fakeClock
	start    string
	steps    []func(w http.ResponseWriter)
	mu       sync.Mutex
	polls    []time.Time
	bodies   map[string][]map[string]any
	agents   []string
	startHit int
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		s.t.Errorf("%s %s content-type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	s.agents = append(s.agents, r.Header.Get("User-Agent"))
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	if s.bodies == nil {
		s.bodies = map[string][]map[string]any{}
	}
	s.bodies[r.URL.Path] = append(s.bodies[r.URL.Path], body)
	switch r.URL.Path {
	case PathDeviceStart:
		s.startHit++
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, s.start)
	case PathDevicePoll:
		s.polls = append(s.polls, s.clock.Now())
		i := len(s.polls) - 1
		if i >= len(s.steps) {
			_, _ = io.WriteString(w, `{"state":"pending"}`)
			return
		}
		s.steps[i](w)
	default:
		http.NotFound(w, r)
	}
}

func state(st string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) { _, _ = io.WriteString(w, `{"state":"`+st+`"}`) }
}

func status(code int, retryAfter string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"error":"too many requests; slow down"}`)
	}
}

func authorized(w http.ResponseWriter) {
	_, _ = io.WriteString(w, `{"state":"authorized","credentials":`+credsJSON+`}`)
}

func newClient(srv *httptest.Server, clock *fakeClock, prompt io.Writer) *Client {
	return &Client{BaseURL: srv.URL + "/", UserAgent: "opengeni-agent/9.9.9", Prompt: prompt, Sleep: clock.Sleep, Now: clock.Now}
}

func gaps(start time.Time, polls []time.Time) []time.Duration {
	var out []time.Duration
	prev := start
	for _, p := range polls {
		out = append(out, p.Sub(prev))
		prev = p
	}
	return out
}

func TestDeviceFlowHonoursPendingSlowDown429ThenAuthorizes(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	s := &scripted{t: t, clock: clock,
		start: `{"userCode":"ABCD-EFGH","deviceCode":"dc-secret","verificationUri":"https://app.test/device",
			"verificationUriComplete":"https://app.test/device?user_code=ABCD-EFGH","intervalSeconds":2,"expiresInSeconds":600}`,
		steps: []func(http.ResponseWriter){
			state("pending"),
			state("slow_down"), // interval 2 → 7
			status(429, "11"),  // wait Retry-After 11, interval 7 → 12
			status(429, ""),    // no Retry-After: interval doubles 12 → 24
			authorized,
		}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	var prompt bytes.Buffer
	c := newClient(srv, clock, &prompt)
	creds, err := c.DeviceFlow(context.Background(), StartRequest{WorkspaceID: "ws-1", PublicKey: "k", OS: "linux", Arch: "x86_64", MachineName: "box"})
	if err != nil {
		t.Fatal(err)
	}
	if creds.Bearer != "oge_bearer" || creds.AgentID != "agent-1" {
		t.Fatalf("creds %+v", creds)
	}
	want := []time.Duration{2 * time.Second, 2 * time.Second, 7 * time.Second, 11 * time.Second, 24 * time.Second}
	got := gaps(t0, s.polls)
	if len(got) != len(want) {
		t.Fatalf("poll gaps %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("poll gaps %v, want %v", got, want)
		}
	}
	// Sleep-first: the first poll came one interval after start.
	if s.startHit != 1 || len(clock.sleeps) != len(want) {
		t.Fatalf("start hit %d, sleeps %v", s.startHit, clock.sleeps)
	}
	wantPrompt := "\n  To authorize this machine, visit:\n      https://app.test/device\n  and enter the code:\n      ABCD-EFGH\n" +
		"  (or open directly: https://app.test/device?user_code=ABCD-EFGH)\n\n  Waiting for authorization...\n"
	if prompt.String() != wantPrompt {
		t.Fatalf("prompt:\n%q\nwant\n%q", prompt.String(), wantPrompt)
	}
	if strings.Contains(prompt.String(), "dc-secret") {
		t.Fatal("device code printed")
	}
	for _, ua := range s.agents {
		if ua != "opengeni-agent/9.9.9" {
			t.Fatalf("User-Agent %q", ua)
		}
	}
	if b := s.bodies[PathDevicePoll][0]; b["deviceCode"] != "dc-secret" {
		t.Fatalf("poll body %v", b)
	}
	if b := s.bodies[PathDeviceStart][0]; b["workspaceId"] != "ws-1" || b["machineName"] != "box" || b["requestsScreenControl"] != false {
		t.Fatalf("start body %v", b)
	}
}

func TestDeviceFlowExpiresClientSide(t *testing.T) {
	clock := newClock()
	t0 := clock.Now()
	s := &scripted{t: t, clock: clock, start: `{"userCode":"u","deviceCode":"d","verificationUri":"v","intervalSeconds":3,"expiresInSeconds":10}`}
	srv := httptest.NewServer(s)
	defer srv.Close()
	_, err := newClient(srv, clock, nil).DeviceFlow(context.Background(), StartRequest{WorkspaceID: "w"})
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "enroll` again") {
		t.Fatalf("err = %v, want a clear ErrExpired", err)
	}
	// Polls at 3, 6, 9 and one last one right at the 10 s deadline; none after.
	want := []time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second, time.Second}
	got := gaps(t0, s.polls)
	if len(got) != len(want) {
		t.Fatalf("poll gaps %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("poll gaps %v, want %v", got, want)
		}
	}
}

func TestDeviceFlowTerminalOutcomes(t *testing.T) {
	tests := []struct {
		name string
		step func(http.ResponseWriter)
		want error
		text string
	}{
		{"denied", state("denied"), ErrDenied, "enrollment denied by the user"},
		{"server expired", state("expired"), ErrExpired, "enrollment expired before authorization"},
		{"disabled", state("disabled"), ErrDisabled, "credential issuance is disabled"},
		{"authorized without credentials", state("authorized"), ErrNoCredentials, "returned no credentials"},
		{"http 400", status(400, ""), nil, "enrollment endpoint /v1/enrollments/device/poll returned HTTP 400"},
		{"unknown state", state("weird"), nil, "unknown device-flow state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newClock()
			s := &scripted{t: t, clock: clock, start: `{"userCode":"u","deviceCode":"d","verificationUri":"v","intervalSeconds":0}`,
				steps: []func(http.ResponseWriter){state("pending"), tt.step}}
			srv := httptest.NewServer(s)
			defer srv.Close()
			_, err := newClient(srv, clock, nil).DeviceFlow(context.Background(), StartRequest{WorkspaceID: "w"})
			if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("err = %v, want %v / %q", err, tt.want, tt.text)
			}
			// intervalSeconds 0 is clamped to 1 s.
			if clock.sleeps[0] != time.Second {
				t.Fatalf("first sleep %v, want 1s", clock.sleeps[0])
			}
		})
	}
}

func TestPollRidesOutNetworkErrors(t *testing.T) {
	clock := newClock()
	var mu sync.Mutex
	polls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		polls++
		switch polls {
		case 1, 2:
			// Hijack and drop the connection: a transport error on the client.
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
		case 3:
			w.WriteHeader(http.StatusBadGateway)
		default:
			authorized(w)
		}
	}))
	defer srv.Close()
	c := newClient(srv, clock, nil)
	creds, err := c.Poll(context.Background(), &StartResponse{DeviceCode: "d", IntervalSeconds: 1, ExpiresInSeconds: 600})
	if err != nil || creds == nil {
		t.Fatalf("Poll = %v, %v", creds, err)
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	if len(clock.sleeps) != len(want) {
		t.Fatalf("sleeps %v, want %v", clock.sleeps, want)
	}
	for i := range want {
		if clock.sleeps[i] != want[i] {
			t.Fatalf("sleeps %v, want %v", clock.sleeps, want)
		}
	}
}

func TestPollStopsWhenContextEnds(t *testing.T) {
	clock := newClock()
	s := &scripted{t: t, clock: clock}
	srv := httptest.NewServer(s)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c := newClient(srv, clock, nil)
	c.Sleep = func(ctx context.Context, d time.Duration) error {
		if len(s.polls) == 2 {
			cancel()
		}
		return clock.Sleep(ctx, d)
	}
	_, err := c.Poll(ctx, &StartResponse{DeviceCode: "d", IntervalSeconds: 1})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestTokenExchange(t *testing.T) {
	var got map[string]any
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		_ = json.NewDecoder(r.Body).Decode(&got)
		if got["token"] != "oget_good" {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid or expired enroll token"}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"credentials":`+credsJSON+`}`)
	}))
	defer srv.Close()
	c := newClient(srv, newClock(), nil)
	creds, err := c.Exchange(context.Background(), ExchangeRequest{Token: "oget_good", PublicKey: "k", OS: "linux", Arch: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	if path != PathTokenExchange || creds.RelayToken != "ogr_producer" || !creds.ConsentedScreenControl {
		t.Fatalf("path %s creds %+v", path, creds)
	}
	if _, ok := got["workspaceId"]; ok {
		t.Fatal("workspaceId sent on exchange")
	}
	_, err = c.Exchange(context.Background(), ExchangeRequest{Token: "oget_bad"})
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != 401 || !strings.Contains(err.Error(), "invalid or expired enroll token") {
		t.Fatalf("bad token err = %v", err)
	}
	if strings.Contains(err.Error(), "oget_bad") {
		t.Fatal("error quotes the token")
	}
}

func TestStartRetries429WithRetryAfter(t *testing.T) {
	clock := newClock()
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if hits < 3 {
			w.Header().Set("Retry-After", "4")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"userCode":"u","deviceCode":"d","verificationUri":"v"}`)
	}))
	defer srv.Close()
	resp, err := newClient(srv, clock, nil).Start(context.Background(), StartRequest{WorkspaceID: "w"})
	if err != nil || resp.UserCode != "u" {
		t.Fatalf("Start = %+v, %v", resp, err)
	}
	if hits != 3 || len(clock.sleeps) != 2 || clock.sleeps[0] != 4*time.Second || clock.sleeps[1] != 4*time.Second {
		t.Fatalf("hits %d sleeps %v", hits, clock.sleeps)
	}
	// 404 (unknown workspace) is final, not retried.
	srv404 := httptest.NewServer(http.NotFoundHandler())
	defer srv404.Close()
	clock2 := newClock()
	if _, err := newClient(srv404, clock2, nil).Start(context.Background(), StartRequest{}); err == nil || len(clock2.sleeps) != 0 {
		t.Fatalf("404: err %v sleeps %v", err, clock2.sleeps)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0}, {"7", 7 * time.Second}, {"0", 0}, {"-3", 0}, {"junk", 0},
		{"999999", maxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := parseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestHTTPErrorBodyIsTruncated(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, strings.Repeat("x", 2000))
	}))
	defer srv.Close()
	_, err := newClient(srv, newClock(), nil).Start(context.Background(), StartRequest{})
	var he *HTTPError
	if !errors.As(err, &he) || len(he.Body) != 512 {
		t.Fatalf("err %v", err)
	}
}
