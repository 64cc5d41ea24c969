package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// grants is a test Authorizer: "Authorization: Bearer <user>" → the user's
// permissions per workspace.
type grants map[string]map[string][]string

func (g grants) Authenticate(r *http.Request) (*Principal, error) {
	u, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if _, known := g[u]; !ok || !known {
		return nil, ErrUnauthenticated
	}
	return &Principal{SubjectID: u, Label: u + "@example.com"}, nil
}

func (g grants) Permissions(_ context.Context, p *Principal, ws string) ([]string, error) {
	return g[p.SubjectID][ws], nil
}

var testGrants = grants{
	"admin-a":   {wsA: {PermWorkspaceAdmin}},
	"manager-a": {wsA: {PermEnrollmentsManage}},
	"reader-a":  {wsA: {PermEnrollmentsRead}},
	"admin-b":   {wsB: {PermWorkspaceAdmin}},
	"reader-b":  {wsB: {PermEnrollmentsRead}},
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

type fixture struct {
	srv   *httptest.Server
	store *store.Store
	clock *clock
}

func newFixture(t testing.TB, mod ...func(*Config)) *fixture {
	t.Helper()
	ns := natstest.Start(t, natstest.JetStream(t.TempDir()))
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: tNow}
	st, err := store.New(context.Background(), js, store.Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Store: st, Authorizer: testGrants, Enabled: true, SigningSecret: secret, RelayTokenSecret: "relay-secret",
		NATSURL: "wss://nats.example:8443", RelayURL: "https://relay.example", UpdatePublicKey: "update-key",
		Workspaces: func(_ context.Context, ws string) (string, bool, error) {
			return "acct-" + ws[:4], ws == wsA || ws == wsB, nil
		},
		Now: c.Now, Logger: slog.New(slog.DiscardHandler),
	}
	for _, m := range mod {
		m(&cfg)
	}
	api, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: httptest.NewServer(api), store: st, clock: c}
	t.Cleanup(f.srv.Close)
	return f
}

type resp struct {
	status int
	body   map[string]any
	raw    string
}

// do sends a request as user ("" = no auth) from ip.
func (f *fixture) do(t testing.TB, method, path, user string, body any, hdr ...string) resp {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, raw: string(raw)}
	_ = json.Unmarshal(raw, &r.body)
	return r
}

func (f *fixture) start(t testing.TB, ws, pubkey string, extra map[string]any) resp {
	t.Helper()
	body := map[string]any{"publicKey": pubkey, "workspaceId": ws, "os": "linux", "arch": "x86_64", "machineName": "laptop", "canOfferDisplay": true}
	for k, v := range extra {
		body[k] = v
	}
	return f.do(t, "POST", "/v1/enrollments/device/start", "", body)
}

func (f *fixture) poll(t testing.TB, deviceCode string) resp {
	t.Helper()
	return f.do(t, "POST", "/v1/enrollments/device/poll", "", map[string]any{"deviceCode": deviceCode})
}

func (f *fixture) approve(t testing.TB, ws, user, userCode string, allow bool) resp {
	t.Helper()
	return f.do(t, "POST", "/v1/workspaces/"+ws+"/enrollments/device/approve", user, map[string]any{"userCode": userCode, "allowScreenControl": allow})
}

func want(t testing.TB, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
}

func str(m map[string]any, k string) string { s, _ := m[k].(string); return s }

func creds(t testing.TB, r resp) map[string]any {
	t.Helper()
	c, ok := r.body["credentials"].(map[string]any)
	if !ok {
		t.Fatalf("no credentials: %s", r.raw)
	}
	return c
}

// checkCredentials is the credential shape every authorized poll and
// exchange returns.
func checkCredentials(t testing.TB, c map[string]any, ws, agentID string, screen bool) {
	t.Helper()
	if str(c, "agentId") != agentID || str(c, "workspaceId") != ws || str(c, "subjectPrefix") != "agent."+ws+"."+agentID {
		t.Errorf("identity: %v", c)
	}
	if urls, _ := c["natsUrls"].([]any); len(urls) != 1 || urls[0] != "wss://nats.example:8443" {
		t.Errorf("natsUrls %v", c["natsUrls"])
	}
	if str(c, "relayUrl") != "wss://relay.example/stream" || str(c, "updatePublicKey") != "update-key" {
		t.Errorf("relay/update: %v", c)
	}
	if str(c, "natsAccountCreds") != str(c, "bearer") || c["consentedWholeMachine"] != true || c["consentedScreenControl"] != screen {
		t.Errorf("creds/consent: %v", c)
	}
	b, err := VerifyBearer(secret, str(c, "bearer"), tNow)
	if err != nil || b.WorkspaceID != ws || b.AgentID != agentID || b.EnrollmentID != agentID || b.Exp != tNow.Unix()+2592000 {
		t.Errorf("bearer: %+v %v", b, err)
	}
	rt, err := token.VerifyAgent("relay-secret", str(c, "relayToken"), tNow)
	if err != nil || rt.WorkspaceID != ws || rt.AgentID != agentID || rt.Exp != tNow.Unix()+2592000 {
		t.Errorf("relay token: %+v %v", rt, err)
	}
}

// Attack: a device code read from a log or a store dump, polled alongside
// (or after) the real machine. Exactly one poll ever gets credentials.
func TestDeviceCodeSingleUse(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-race", nil)
	want(t, s, 201)
	uc, dc := str(s.body, "userCode"), str(s.body, "deviceCode")
	want(t, f.approve(t, wsA, "manager-a", uc, false), 201)
	const polls = 16
	states := make(chan string, polls)
	var wg sync.WaitGroup
	for i := 0; i < polls; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := f.poll(t, dc)
			state := str(p.body, "state")
			if state != "authorized" && p.body["credentials"] != nil {
				t.Errorf("credentials with state %q", state)
			}
			states <- state
		}()
	}
	wg.Wait()
	close(states)
	authorized := 0
	for st := range states {
		if st == "authorized" {
			authorized++
		} else if st != "expired" {
			t.Errorf("state %q", st)
		}
	}
	replays := 0
	for i := 0; i < 8; i++ {
		if p := f.poll(t, dc); str(p.body, "state") == "expired" && p.body["credentials"] == nil {
			replays++
		}
	}
	if authorized != 1 || replays != 8 {
		t.Fatalf("authorized %d of %d concurrent polls (want 1); %d of 8 replays refused", authorized, polls, replays)
	}
	t.Logf("ATTACK class=consumed-device-code attempts=%d refused=%d", polls-1+8, polls-authorized+replays)
}

func TestDeviceFlow(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-1", nil)
	want(t, s, 201)
	uc, dc := str(s.body, "userCode"), str(s.body, "deviceCode")
	if !UserCodePattern.MatchString(uc) || len(dc) != 43 {
		t.Fatalf("codes %q %q", uc, dc)
	}
	if s.body["intervalSeconds"] != float64(5) || s.body["expiresInSeconds"] != float64(600) ||
		str(s.body, "verificationUri") != f.srv.URL+"/device" ||
		str(s.body, "verificationUriComplete") != f.srv.URL+"/device?user_code="+uc {
		t.Fatalf("start body %s", s.raw)
	}
	p := f.poll(t, dc)
	want(t, p, 200)
	if str(p.body, "state") != "pending" || p.body["credentials"] != nil {
		t.Fatalf("poll %s", p.raw)
	}
	a := f.approve(t, wsA, "manager-a", strings.ToLower(uc), true)
	want(t, a, 201)
	enrID := str(a.body, "enrollmentId")
	if a.body["approved"] != true || enrID == "" || str(a.body, "sandboxId") == "" || a.body["allowScreenControl"] != true {
		t.Fatalf("approve %s", a.raw)
	}
	p = f.poll(t, dc)
	want(t, p, 200)
	if str(p.body, "state") != "authorized" {
		t.Fatalf("poll %s", p.raw)
	}
	checkCredentials(t, creds(t, p), wsA, enrID, true)
	// Single-use (docs/security.md; the reference answers authorized again):
	// a consumed code never returns credentials.
	for i := 0; i < 3; i++ {
		if p2 := f.poll(t, dc); str(p2.body, "state") != "expired" || p2.body["credentials"] != nil {
			t.Fatalf("poll of a consumed code %s", p2.raw)
		}
	}
	d, _ := f.store.GetDeviceRequest(context.Background(), dc)
	if d.Status != store.DeviceConsumed || d.ApprovedBySubjectID != "manager-a" || d.ApprovedByLabel != "manager-a@example.com" {
		t.Fatalf("request row %+v", d)
	}
	// The code is no longer pending: a second approval finds nothing.
	want(t, f.approve(t, wsA, "manager-a", uc, true), 404)
	// Listed, with the enrollment's facts.
	l := f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments", "reader-a", nil)
	want(t, l, 200)
	list := l.body["enrollments"].([]any)
	row := list[0].(map[string]any)
	if len(list) != 1 || str(row, "id") != enrID || str(row, "pubkey") != "pk-1" || row["hasDisplay"] != true ||
		row["allowScreenControl"] != true || str(row, "status") != "active" || row["revokedAt"] != nil || row["lastSeenAt"] != nil ||
		str(row, "exposure") != "whole-machine" || str(row, "os") != "linux" || str(row, "arch") != "x86_64" {
		t.Fatalf("list %s", l.raw)
	}
	e, _ := f.store.GetEnrollment(context.Background(), wsA, enrID)
	if e.SandboxName != "laptop" || e.AccountID != "acct-aaaa" {
		t.Fatalf("enrollment %+v", e)
	}
}

func TestScreenControlOff(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-1", map[string]any{"requestsScreenControl": true})
	want(t, f.approve(t, wsA, "admin-a", str(s.body, "userCode"), false), 201)
	p := f.poll(t, str(s.body, "deviceCode"))
	if c := creds(t, p); c["consentedScreenControl"] != false {
		t.Fatalf("consent %v", c)
	}
}

func TestApproveAuth(t *testing.T) {
	f := newFixture(t)
	uc := str(f.start(t, wsA, "pk-1", nil).body, "userCode")
	want(t, f.approve(t, wsA, "", uc, false), 401)
	want(t, f.approve(t, wsA, "stranger", uc, false), 401)
	want(t, f.approve(t, wsA, "reader-a", uc, false), 403)
	// A grant in B: B's route has no such pending code; A's route is forbidden.
	r := f.approve(t, wsB, "admin-b", uc, false)
	want(t, r, 404)
	if str(r.body, "error") != "no pending enrollment for that code" {
		t.Fatalf("message %s", r.raw)
	}
	want(t, f.approve(t, wsA, "admin-b", uc, false), 403)
	// Still pending after all that.
	want(t, f.approve(t, wsA, "admin-a", uc, false), 201)
	want(t, f.approve(t, wsA, "admin-a", "ZZZZ-ZZZZ", false), 404)
	want(t, f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/device/approve", "admin-a", `{"userCode":`), 400)
	want(t, f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/device/approve", "admin-a", `{"userCode":""}`), 400)
}

func TestListRevokeReenroll(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-1", nil)
	enrID := str(f.approve(t, wsA, "admin-a", str(s.body, "userCode"), true).body, "enrollmentId")
	rv := f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/"+enrID+"/revoke", "manager-a", nil)
	want(t, rv, 200)
	if rv.body["revoked"] != true {
		t.Fatalf("revoke %s", rv.raw)
	}
	if rv := f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/"+enrID+"/revoke", "manager-a", nil); rv.body["revoked"] != false {
		t.Fatalf("second revoke %s", rv.raw)
	}
	want(t, f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/"+enrID+"/revoke", "reader-a", nil), 403)
	if rv := f.do(t, "POST", "/v1/workspaces/"+wsB+"/enrollments/"+enrID+"/revoke", "admin-b", nil); rv.body["revoked"] != false {
		t.Fatalf("cross-workspace revoke %s", rv.raw)
	}
	act := f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments?status=active", "reader-a", nil)
	if list := act.body["enrollments"].([]any); len(list) != 0 {
		t.Fatalf("active after revoke %s", act.raw)
	}
	all := f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments", "reader-a", nil)
	if row := all.body["enrollments"].([]any)[0].(map[string]any); row["status"] != "revoked" || row["revokedAt"] == nil {
		t.Fatalf("all %s", all.raw)
	}
	want(t, f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments?status=bogus", "reader-a", nil), 400)
	want(t, f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments", "admin-b", nil), 403)
	// A revoked enrollment's consumed request polls as denied.
	if p := f.poll(t, str(s.body, "deviceCode")); str(p.body, "state") != "denied" {
		t.Fatalf("poll after revoke %s", p.raw)
	}
	// Re-approving the same pubkey reuses the enrollment id.
	s2 := f.start(t, wsA, "pk-1", nil)
	a2 := f.approve(t, wsA, "admin-a", str(s2.body, "userCode"), false)
	if str(a2.body, "enrollmentId") != enrID {
		t.Fatalf("re-enroll id %s vs %s", str(a2.body, "enrollmentId"), enrID)
	}
	if act := f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments?status=active", "reader-a", nil); len(act.body["enrollments"].([]any)) != 1 {
		t.Fatalf("active after re-enroll %s", act.raw)
	}
}

func TestFlagOff(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Enabled = false })
	for _, r := range []resp{
		f.start(t, wsA, "pk", nil),
		f.poll(t, "x"),
		f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments", "admin-a", nil),
		f.approve(t, wsA, "admin-a", "ABCD-EFGH", false),
		f.do(t, "POST", "/v1/enrollments/device/lookup", "admin-a", map[string]any{"userCode": "ABCD-EFGH"}),
		f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/device/deny", "admin-a", map[string]any{"userCode": "ABCD-EFGH"}),
		f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/token", "admin-a", nil),
		f.do(t, "POST", "/v1/enrollments/token/exchange", "", map[string]any{"token": "oget_x.y", "publicKey": "pk"}),
		f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/x/revoke", "admin-a", nil),
	} {
		want(t, r, 404)
	}
	// Auth runs before the flag.
	want(t, f.approve(t, wsA, "", "ABCD-EFGH", false), 401)
}

func TestLookup(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-1", map[string]any{"machineName": nil, "os": "macos", "arch": "aarch64", "requestsScreenControl": true})
	uc := str(s.body, "userCode")
	lookup := func(user, code string) resp {
		return f.do(t, "POST", "/v1/enrollments/device/lookup", user, map[string]any{"userCode": code})
	}
	r := lookup("reader-a", uc)
	want(t, r, 200)
	m := r.body["machine"].(map[string]any)
	if str(r.body, "workspaceId") != wsA || str(r.body, "userCode") != uc || str(r.body, "expiresAt") != "2026-06-22T12:10:00.000Z" ||
		m["machineName"] != nil || m["os"] != "macos" || m["arch"] != "aarch64" || m["canOfferDisplay"] != true || m["requestsScreenControl"] != true {
		t.Fatalf("lookup %s", r.raw)
	}
	// Not consumed.
	if p := f.poll(t, str(s.body, "deviceCode")); str(p.body, "state") != "pending" {
		t.Fatalf("poll after lookup %s", p.raw)
	}
	want(t, lookup("reader-a", "ZZZZ-ZZZZ"), 404)
	want(t, lookup("", uc), 404)
	want(t, lookup("reader-b", uc), 404)
	want(t, lookup("admin-b", uc), 404)
}

func TestDeny(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-1", nil)
	uc := str(s.body, "userCode")
	deny := func(ws, user string) resp {
		return f.do(t, "POST", "/v1/workspaces/"+ws+"/enrollments/device/deny", user, map[string]any{"userCode": uc})
	}
	want(t, deny(wsA, "reader-a"), 403)
	if r := deny(wsB, "admin-b"); r.body["denied"] != false {
		t.Fatalf("cross-workspace deny %s", r.raw)
	}
	if r := deny(wsA, "manager-a"); r.status != 200 || r.body["denied"] != true {
		t.Fatalf("deny %s", r.raw)
	}
	if p := f.poll(t, str(s.body, "deviceCode")); str(p.body, "state") != "denied" {
		t.Fatalf("poll %s", p.raw)
	}
	if r := deny(wsA, "manager-a"); r.body["denied"] != false {
		t.Fatalf("second deny %s", r.raw)
	}
	want(t, f.approve(t, wsA, "admin-a", uc, false), 404)
	if r := f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/device/deny", "admin-a", map[string]any{"userCode": "ZZZZ-ZZZZ"}); r.body["denied"] != false {
		t.Fatalf("unknown deny %s", r.raw)
	}
}

func TestDeviceCodeExpires(t *testing.T) {
	f := newFixture(t)
	s := f.start(t, wsA, "pk-1", nil)
	f.clock.Advance(599 * time.Second)
	if p := f.poll(t, str(s.body, "deviceCode")); str(p.body, "state") != "pending" {
		t.Fatalf("before expiry %s", p.raw)
	}
	f.clock.Advance(time.Second) // expires_at <= now
	if p := f.poll(t, str(s.body, "deviceCode")); str(p.body, "state") != "expired" {
		t.Fatalf("at expiry %s", p.raw)
	}
	want(t, f.approve(t, wsA, "admin-a", str(s.body, "userCode"), false), 404)
	want(t, f.do(t, "POST", "/v1/enrollments/device/lookup", "admin-a", map[string]any{"userCode": str(s.body, "userCode")}), 404)
	// An unknown device code is "expired" (no existence leak).
	if p := f.poll(t, "no-such-code"); str(p.body, "state") != "expired" {
		t.Fatalf("unknown %s", p.raw)
	}
}

func TestMintExchange(t *testing.T) {
	f := newFixture(t)
	mintPath := "/v1/workspaces/" + wsA + "/enrollments/token"
	want(t, f.do(t, "POST", mintPath, "", nil), 401)
	want(t, f.do(t, "POST", mintPath, "reader-a", nil), 403)
	m := f.do(t, "POST", mintPath, "manager-a", nil) // empty body OK
	want(t, m, 201)
	tok := str(m.body, "token")
	if !strings.HasPrefix(tok, "oget_") || m.body["expiresInSeconds"] != float64(3600) || str(m.body, "expiresAt") != "2026-06-22T13:00:00.000Z" {
		t.Fatalf("mint %s", m.raw)
	}
	c, err := VerifyEnrollToken(secret, tok, tNow)
	if err != nil || c.AllowScreenControl || c.AccountID != "acct-aaaa" {
		t.Fatalf("minted claims %+v %v", c, err)
	}
	m = f.do(t, "POST", mintPath, "admin-a", map[string]any{"allowScreenControl": true})
	tok = str(m.body, "token")

	exchange := func(tok string, extra map[string]any) resp {
		body := map[string]any{"token": tok, "publicKey": "pk-zero", "os": "windows", "arch": "x86_64", "machineName": "desk",
			"canOfferDisplay": true, "requestsScreenControl": false}
		for k, v := range extra {
			body[k] = v
		}
		return f.do(t, "POST", "/v1/enrollments/token/exchange", "", body)
	}
	x := exchange(tok, nil)
	want(t, x, 201)
	cr := creds(t, x)
	agentID := str(cr, "agentId")
	checkCredentials(t, cr, wsA, agentID, true) // screen control from the claim
	// Reusable until it expires; same pubkey → same enrollment.
	if x2 := exchange(tok, nil); str(creds(t, x2), "agentId") != agentID {
		t.Fatalf("second exchange %s", x2.raw)
	}
	l := f.do(t, "GET", "/v1/workspaces/"+wsA+"/enrollments", "reader-a", nil)
	if row := l.body["enrollments"].([]any)[0].(map[string]any); row["allowScreenControl"] != true || row["hasDisplay"] != true || row["os"] != "windows" {
		t.Fatalf("list %s", l.raw)
	}
	bearer := str(cr, "bearer")
	for name, bad := range map[string]string{"garbage": "oget_nope.nope", "bearer": bearer, "empty-ish": "x"} {
		r := exchange(bad, nil)
		if r.status != 401 || str(r.body, "error") != "invalid or expired enroll token" {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	want(t, exchange(tok, map[string]any{"os": "plan9"}), 400)
	want(t, exchange(tok, map[string]any{"exposure": "workspace"}), 400)
	f.clock.Advance(3601 * time.Second)
	want(t, exchange(tok, nil), 401)
}

func TestNoSecret(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.SigningSecret = "" })
	want(t, f.do(t, "POST", "/v1/workspaces/"+wsA+"/enrollments/token", "admin-a", nil), 503)
	r := f.do(t, "POST", "/v1/enrollments/token/exchange", "", map[string]any{"token": "oget_a.b", "publicKey": "pk"})
	if r.status != 503 || str(r.body, "error") != "enrollment credential plane is not configured" {
		t.Fatalf("exchange %d %s", r.status, r.raw)
	}
	s := f.start(t, wsA, "pk", nil)
	want(t, f.approve(t, wsA, "admin-a", str(s.body, "userCode"), false), 201)
	if p := f.poll(t, str(s.body, "deviceCode")); str(p.body, "state") != "disabled" {
		t.Fatalf("poll %s", p.raw)
	}
}

func TestNoRelay(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RelayURL, c.NATSURL, c.UpdatePublicKey = "", "", "" })
	s := f.start(t, wsA, "pk", nil)
	f.approve(t, wsA, "admin-a", str(s.body, "userCode"), false)
	c := creds(t, f.poll(t, str(s.body, "deviceCode")))
	if c["relayUrl"] != "" || c["relayToken"] != "" || c["updatePublicKey"] != "" || len(c["natsUrls"].([]any)) != 0 {
		t.Fatalf("creds %v", c)
	}
}

func TestStartValidation(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.RateLimits = RateLimits{Start: Bucket{Capacity: 1000, Refill: 1000}} })
	path := "/v1/enrollments/device/start"
	long := strings.Repeat("k", 1025)
	for name, body := range map[string]any{
		"not json":        "{",
		"empty":           "",
		"no workspace":    map[string]any{"publicKey": "pk"},
		"bad workspace":   map[string]any{"publicKey": "pk", "workspaceId": "ws-1"},
		"no pubkey":       map[string]any{"workspaceId": wsA},
		"empty pubkey":    map[string]any{"workspaceId": wsA, "publicKey": ""},
		"long pubkey":     map[string]any{"workspaceId": wsA, "publicKey": long},
		"bad os":          map[string]any{"workspaceId": wsA, "publicKey": "pk", "os": "unknown"},
		"bad arch":        map[string]any{"workspaceId": wsA, "publicKey": "pk", "arch": "riscv"},
		"empty name":      map[string]any{"workspaceId": wsA, "publicKey": "pk", "machineName": ""},
		"bad exposure":    map[string]any{"workspaceId": wsA, "publicKey": "pk", "exposure": "folder"},
		"wrong type":      map[string]any{"workspaceId": wsA, "publicKey": "pk", "canOfferDisplay": "yes"},
		"pubkey a number": map[string]any{"workspaceId": wsA, "publicKey": 7},
	} {
		if r := f.do(t, "POST", path, "", body); r.status != 400 {
			t.Errorf("%s: %d %s", name, r.status, r.raw)
		}
	}
	want(t, f.start(t, "cccccccc-cccc-4ccc-8ccc-cccccccccccc", "pk", nil), 404) // unknown workspace
	// Defaults: linux, x86_64, whole-machine, no display.
	r := f.do(t, "POST", path, "", map[string]any{"workspaceId": wsA, "publicKey": "pk"})
	want(t, r, 201)
	d, _ := f.store.GetDeviceRequest(context.Background(), str(r.body, "deviceCode"))
	if d.OS != "linux" || d.Arch != "x86_64" || d.RequestedExposure != "whole-machine" || d.CanOfferDisplay || d.MachineName != nil || d.AccountID != "acct-aaaa" {
		t.Fatalf("defaults %+v", d)
	}
}

func TestRateLimits(t *testing.T) {
	// The test client is the trusted proxy, so the headers name the client.
	f := newFixture(t, func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} })
	ip := func(addr string) []string { return []string{"X-Forwarded-For", "10.0.0.1, " + addr} }
	body := map[string]any{"workspaceId": wsA, "publicKey": "pk"}
	for i := range 10 {
		if r := f.do(t, "POST", "/v1/enrollments/device/start", "", body, ip("1.1.1.1")...); r.status != 201 {
			t.Fatalf("start %d: %d", i, r.status)
		}
	}
	r := f.do(t, "POST", "/v1/enrollments/device/start", "", body, ip("1.1.1.1")...)
	if r.status != 429 || str(r.body, "error") != "too many requests; slow down" {
		t.Fatalf("11th start: %d %s", r.status, r.raw)
	}
	// Another IP has its own bucket; X-Real-IP is used without XFF.
	want(t, f.do(t, "POST", "/v1/enrollments/device/start", "", body, "X-Real-IP", "2.2.2.2"), 201)
	// Refill 0.5/s: one token after 2 s.
	f.clock.Advance(2 * time.Second)
	want(t, f.do(t, "POST", "/v1/enrollments/device/start", "", body, ip("1.1.1.1")...), 201)
	want(t, f.do(t, "POST", "/v1/enrollments/device/start", "", body, ip("1.1.1.1")...), 429)
	// Polling too fast is slowed: 60 then 429.
	for range 60 {
		f.poll(t, "code")
	}
	if r := f.poll(t, "code"); r.status != 429 {
		t.Fatalf("61st poll %d", r.status)
	}
	// The rate limit runs before parsing.
	want(t, f.do(t, "POST", "/v1/enrollments/device/poll", "", "{"), 429)
}

func TestRelayDialURL(t *testing.T) {
	for raw, want := range map[string]string{
		"":                                "",
		"https://relay.example":           "wss://relay.example/stream",
		"wss://relay.example:443/":        "wss://relay.example/stream",
		"relay.example":                   "wss://relay.example/stream",
		"http://relay.local:8080/s":       "ws://relay.local:8080/s",
		"ws://relay.local:80":             "ws://relay.local/stream",
		"wss://relay.example:8443/stream": "wss://relay.example:8443/stream",
	} {
		if got := RelayDialURL(raw); got != want {
			t.Errorf("RelayDialURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

func TestStaticToken(t *testing.T) {
	a := StaticToken{Token: "dev-admin"}
	r := httptest.NewRequest("GET", "/", nil)
	if _, err := a.Authenticate(r); err != ErrUnauthenticated {
		t.Fatal("no header accepted")
	}
	r.Header.Set("Authorization", "Bearer wrong")
	if _, err := a.Authenticate(r); err != ErrUnauthenticated {
		t.Fatal("wrong token accepted")
	}
	r.Header.Set("Authorization", "Bearer dev-admin")
	p, err := a.Authenticate(r)
	if err != nil || p.Label != "local admin" {
		t.Fatalf("%+v %v", p, err)
	}
	if perms, _ := a.Permissions(context.Background(), p, wsB); !Allows(perms, PermEnrollmentsManage) || !Allows(perms, PermEnrollmentsRead) {
		t.Fatal("admin lacks a permission")
	}
	if _, err := (StaticToken{}).Authenticate(r); err != ErrUnauthenticated {
		t.Fatal("empty static token accepts anything")
	}
	// End to end through the API.
	f := newFixture(t, func(c *Config) { c.Authorizer = a })
	s := f.start(t, wsA, "pk", nil)
	want(t, f.approve(t, wsA, "dev-admin", str(s.body, "userCode"), true), 201)
}
