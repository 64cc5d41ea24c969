package authcallout

import (
	"context"
	"crypto/sha512"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	"github.com/opengeni/opengeni-agent/internal/subject/subjecttest"
	"github.com/opengeni/opengeni-agent/relay/token"
)

const (
	secret = "callout-test-secret"
	wsA    = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	wsB    = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	pw     = "s3cret"
)

// ---- unit tests: Authorize over a map of enrollments ----

type enrollments map[string]store.Enrollment

func (m enrollments) GetEnrollment(_ context.Context, ws, id string) (store.Enrollment, error) {
	e, ok := m[ws+"."+id]
	if !ok {
		return store.Enrollment{}, store.ErrNotFound
	}
	return e, nil
}

var uNow = time.Date(2026, 6, 22, 12, 0, 0, 0, time.UTC)

type unit struct {
	r       *Responder
	account nkeys.KeyPair
	accPub  string
	server  nkeys.KeyPair
	srvPub  string
}

func newUnit(t testing.TB, mod ...func(*Config)) *unit {
	t.Helper()
	acc, _ := nkeys.CreateAccount()
	srv, _ := nkeys.CreateServer()
	u := &unit{account: acc, server: srv}
	u.accPub, _ = acc.PublicKey()
	u.srvPub, _ = srv.PublicKey()
	cfg := Config{Issuer: acc, SigningSecret: secret, Now: func() time.Time { return uNow },
		Enrollments: enrollments{
			wsA + ".agent-a":  {ID: "agent-a", WorkspaceID: wsA, Status: "active"},
			wsA + ".revoked":  {ID: "revoked", WorkspaceID: wsA, Status: "revoked"},
			wsA + ".agent-a2": {ID: "agent-a2", WorkspaceID: wsA, Status: "active"},
			wsB + ".agent-b":  {ID: "agent-b", WorkspaceID: wsB, Status: "active"},
			// Identities no grant may carry: one would name many machines.
			wsA + ".>":   {ID: ">", WorkspaceID: wsA, Status: "active"},
			wsA + ".*":   {ID: "*", WorkspaceID: wsA, Status: "active"},
			wsA + ".x.y": {ID: "x.y", WorkspaceID: wsA, Status: "active"},
		}}
	for _, m := range mod {
		m(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u.r = r
	return u
}

// request builds a server-signed authorization request carrying tok and,
// if given, a CONNECT name.
func (u *unit) request(t testing.TB, tok string, name ...string) (string, string) {
	t.Helper()
	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	rc := jwt.NewAuthorizationRequestClaims(userPub)
	rc.Audience = "nats-authorization-request"
	rc.UserNkey = userPub
	rc.Server = jwt.ServerID{Name: "srv", ID: u.srvPub}
	rc.ClientInformation = jwt.ClientInformation{ID: 7, Host: "127.0.0.1"}
	rc.ConnectOptions = jwt.ConnectOptions{Token: tok}
	if len(name) > 0 {
		rc.ConnectOptions.Name = name[0]
	}
	s, err := rc.Encode(u.server)
	if err != nil {
		t.Fatal(err)
	}
	return s, userPub
}

func bearer(t testing.TB, ws, agent string, now time.Time) string {
	t.Helper()
	b, _, err := enroll.MintBearer(secret, ws, agent, now)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeResponse verifies the response's signature and returns it.
func (u *unit) decodeResponse(t testing.TB, d Decision) *jwt.AuthorizationResponseClaims {
	t.Helper()
	rc, err := jwt.DecodeAuthorizationResponseClaims(d.Response)
	if err != nil {
		t.Fatalf("response does not verify: %v", err)
	}
	if rc.Issuer != u.accPub || rc.Audience != u.srvPub {
		t.Fatalf("response iss %q aud %q", rc.Issuer, rc.Audience)
	}
	return rc
}

func TestAuthorizeGrant(t *testing.T) {
	u := newUnit(t)
	b := bearer(t, wsA, "agent-a", uNow)
	req, userPub := u.request(t, b)
	d, err := u.r.Authorize(context.Background(), req)
	if err != nil || d.Error != "" || d.UserJWT == "" {
		t.Fatalf("grant: %+v %v", d, err)
	}
	rc := u.decodeResponse(t, d)
	if rc.Subject != userPub || rc.Jwt != d.UserJWT || rc.Error != "" || rc.Type != jwt.AuthorizationResponseClaim || rc.Version != 2 {
		t.Fatalf("response %+v", rc)
	}
	uc, err := jwt.DecodeUserClaims(rc.Jwt) // verifies under the account key
	if err != nil {
		t.Fatal(err)
	}
	// One machine, not the reference's agent.<ws>.> and _INBOX.> (docs/security.md).
	g := subject.AgentGrant(wsA, "agent-a", "")
	if !slices.Equal(uc.Pub.Allow, g.Publish) || !slices.Equal(uc.Sub.Allow, g.Subscribe) || len(uc.Pub.Deny) != 0 || len(uc.Sub.Deny) != 0 {
		t.Fatalf("permissions pub %v sub %v", uc.Pub, uc.Sub)
	}
	bc, _ := enroll.VerifyBearer(secret, b, uNow)
	if uc.Audience != "APP" || uc.Issuer != u.accPub || uc.Subject != userPub || uc.Name != "agent-a" || uc.Expires != bc.Exp ||
		uc.IssuedAt != uNow.Unix() || uc.Type != jwt.UserClaim || uc.Version != 2 || uc.Subs != -1 || uc.Data != -1 || uc.Limits.NatsLimits.Payload != -1 {
		t.Fatalf("user claims %+v", uc)
	}
	// Beyond the reference: allow-responses is how an agent answers (it may
	// publish to no inbox), one reply per request, for as long as the
	// longest exec may run (nats-server's default would be 2 minutes).
	if uc.Resp == nil || uc.Resp.MaxMsgs != 1 || uc.Resp.Expires < time.Hour+5*time.Second {
		t.Fatalf("resp permission = %+v", uc.Resp)
	}
	// Header and jti.
	parts := strings.Split(rc.Jwt, ".")
	hdr, _ := jwtSegment(parts[0])
	if hdr != `{"typ":"JWT","alg":"ed25519-nkey"}` {
		t.Fatalf("header %s", hdr)
	}
	for _, tokn := range []string{rc.Jwt, d.Response} {
		checkJTI(t, tokn)
	}
	// Key order and unescaped '>' as the reference writes them.
	payload, _ := jwtSegment(parts[1])
	wantPrefix := `{"jti":"` + uc.ID + `","iat":1782129600,"iss":"` + u.accPub + `","name":"agent-a","sub":"` + userPub +
		`","aud":"APP","nats":{"type":"user","version":2,"pub":{"allow":["agent.` + wsA + `.agent-a.events","agent.` + wsA +
		`.agent-a.hello"]},"sub":{"allow":["agent.` + wsA + `.agent-a.rpc","_INBOX_AGENT.` + wsA +
		`.agent-a.>"]},"resp":{"max":1,"ttl":3900000000000},"subs":-1,"data":-1,"payload":-1},"exp":`
	if !strings.HasPrefix(payload, wantPrefix) {
		t.Fatalf("payload %s\nwant    %s", payload, wantPrefix)
	}
	rp, _ := jwtSegment(strings.Split(d.Response, ".")[1])
	if !strings.HasPrefix(rp, `{"jti":"`) || !strings.Contains(rp, `","iat":1782129600,"iss":"`+u.accPub+`","aud":"`+u.srvPub+`","sub":"`+userPub+`","nats":{"type":"authorization_response","version":2,"jwt":"`) {
		t.Fatalf("response payload %s", rp)
	}
}

// Every JWT the responder issues, for v1 and next-revision connections,
// keeps each machine to itself (the invariants of subjecttest.Violations);
// identities and connection names that would widen a grant are denied.
func TestIssuedGrantsKeepMachinesApart(t *testing.T) {
	u := newUnit(t)
	var holders []subjecttest.Holder
	for _, id := range []struct{ ws, agent, name, inst string }{
		{wsA, "agent-a", "", ""},
		{wsA, "agent-a", "opengeni-agent/agent-a", ""},
		{wsA, "agent-a2", "", ""},
		{wsB, "agent-b", "", ""},
		{wsA, "agent-a", "opengeni-agent/connection/11111111-1111-4111-8111-111111111111", "11111111-1111-4111-8111-111111111111"},
		{wsA, "agent-a2", "opengeni-agent/connection/33333333-3333-4333-8333-333333333333", "33333333-3333-4333-8333-333333333333"},
		{wsB, "agent-b", "opengeni-agent/connection/22222222-2222-4222-8222-222222222222", "22222222-2222-4222-8222-222222222222"},
	} {
		req, _ := u.request(t, bearer(t, id.ws, id.agent, uNow), id.name)
		d, err := u.r.Authorize(context.Background(), req)
		if err != nil || d.Error != "" {
			t.Fatalf("%s/%s %q: %+v %v", id.ws, id.agent, id.name, d, err)
		}
		uc, err := jwt.DecodeUserClaims(d.UserJWT)
		if err != nil {
			t.Fatal(err)
		}
		g := subject.Grant{Publish: uc.Pub.Allow, Subscribe: uc.Sub.Allow, RespondOnce: uc.Resp != nil && uc.Resp.MaxMsgs == 1}
		if len(uc.Pub.Deny) != 0 || len(uc.Sub.Deny) != 0 {
			t.Fatalf("deny lists are not part of the model: %+v", uc.Permissions)
		}
		if id.inst != "" && !slices.Contains(g.Subscribe, subject.Connection(id.ws, id.agent, id.inst)+".rpc") {
			t.Fatalf("connection %s: no rpc subscription in %v", id.inst, g.Subscribe)
		}
		holders = append(holders, subjecttest.Holder{Workspace: id.ws, Agent: id.agent, Instance: id.inst, Grant: g})
	}
	for _, v := range subjecttest.Violations(holders) {
		t.Error(v)
	}

	denied := []struct{ agent, name, want string }{
		{">", "", ErrMsgMismatch},
		{"*", "", ErrMsgMismatch},
		{"x.y", "", ErrMsgMismatch},
		{"agent-a", "opengeni-agent/connection/*", ErrMsgBadConnection},
		{"agent-a", "opengeni-agent/connection/>", ErrMsgBadConnection},
		{"agent-a", "opengeni-agent/connection/11111111-1111-4111-8111-111111111111.rpc", ErrMsgBadConnection},
		{"agent-a", "opengeni-agent/connection/", ErrMsgBadConnection},
	}
	refused := 0
	for _, c := range denied {
		req, _ := u.request(t, bearer(t, wsA, c.agent, uNow), c.name)
		d, err := u.r.Authorize(context.Background(), req)
		if err != nil || d.Error != c.want || d.UserJWT != "" {
			t.Errorf("agent %q name %q: got %+v %v, want denial %q", c.agent, c.name, d, err, c.want)
			continue
		}
		refused++
	}
	t.Logf("ATTACK class=grant-widening-identity attempts=%d refused=%d", len(denied), refused)
}

// checkJTI: jti = base32(SHA-512/256(the claims JSON with jti "")).
func checkJTI(t *testing.T, tok string) {
	t.Helper()
	payload, err := jwtSegment(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^\{"jti":"([A-Z2-7]+)"`).FindStringSubmatch(payload)
	if m == nil {
		t.Fatalf("no leading jti in %s", payload)
	}
	blank := strings.Replace(payload, m[1], "", 1)
	h := sha512.Sum512_256([]byte(blank))
	if want := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:]); m[1] != want {
		t.Fatalf("jti %s, want %s", m[1], want)
	}
}

func jwtSegment(s string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err
}

func TestAuthorizeDenials(t *testing.T) {
	u := newUnit(t)
	expired := bearer(t, wsA, "agent-a", uNow.Add(-enroll.BearerTTL-time.Second))
	wrongSecret, _, _ := enroll.MintBearer("other", wsA, "agent-a", uNow)
	mismatch, _ := token.Mint(enroll.BearerPrefix, secret, enroll.BearerClaims{WorkspaceID: wsA, AgentID: "other", EnrollmentID: "agent-a", SubjectPrefix: "x", Exp: uNow.Unix() + 60})
	enrollTok, _, _ := enroll.MintEnrollToken(secret, wsA, "", true, uNow)
	for _, tc := range []struct {
		name, tok string
		re        string
	}{
		{"missing", "", "missing"},
		{"bad signature", wrongSecret, "invalid|expired"},
		{"junk", "oge_not.a.valid.bearer", "invalid|expired"},
		{"enroll token", enrollTok, "invalid|expired"},
		{"expired", expired, "invalid|expired"},
		{"revoked", bearer(t, wsA, "revoked", uNow), "not active"},
		{"unknown enrollment", bearer(t, wsA, "nobody", uNow), "not active"},
		{"other workspace", bearer(t, wsB, "agent-a", uNow), "not active"},
		{"identity mismatch", mismatch, "identity mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, userPub := u.request(t, tc.tok)
			d, err := u.r.Authorize(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			rc := u.decodeResponse(t, d) // a denial is still signed
			if rc.Jwt != "" || d.UserJWT != "" || rc.Subject != userPub || !regexp.MustCompile(tc.re).MatchString(rc.Error) || rc.Error != d.Error {
				t.Fatalf("denial %+v", rc)
			}
		})
	}
	// No secret: the credential plane is disabled.
	nos := newUnit(t, func(c *Config) { c.SigningSecret = "" })
	req, _ := nos.request(t, bearer(t, wsA, "agent-a", uNow))
	if d, _ := nos.r.Authorize(context.Background(), req); d.Error != ErrMsgDisabled {
		t.Fatalf("no secret: %+v", d)
	}
	// Not a JWT: no reply at all.
	for _, bad := range []string{"not-a-jwt", "a.b", "a.!!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte(`{"nats":{}}`)) + ".c"} {
		if _, err := u.r.Authorize(context.Background(), bad); !errors.Is(err, ErrUndecodable) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestDecodeRequest(t *testing.T) {
	u := newUnit(t)
	req, userPub := u.request(t, "oge_tok")
	c, err := DecodeRequest(req)
	if err != nil || c.UserNkey != userPub || c.Server.ID != u.srvPub || c.ConnectOptions.Token != "oge_tok" || c.ClientInformation.ID != 7 {
		t.Fatalf("%+v %v", c, err)
	}
	// The signature is not checked.
	parts := strings.Split(req, ".")
	if _, err := DecodeRequest(parts[0] + "." + parts[1] + ".AAAA"); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeRequest("x"); err == nil {
		t.Fatal("malformed decoded")
	}
}

func TestNewValidation(t *testing.T) {
	user, _ := nkeys.CreateUser()
	if _, err := New(Config{Issuer: user, Enrollments: enrollments{}}); err == nil {
		t.Fatal("user key accepted as issuer")
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("empty config accepted")
	}
}

// ---- integration: a real nats-server with auth_callout ----

type world struct {
	srv       *server.Server
	store     *store.Store
	responder *Responder
	control   *nats.Conn
}

// calloutServer is nats-server configured as control.md §6.4: APP holds the
// auth and control users (they bypass the callout); SYS is the system
// account with a "sys" user.
func calloutServer(t testing.TB, issuer string) *server.Server {
	t.Helper()
	app, sys := server.NewAccount("APP"), server.NewAccount("SYS")
	return natstest.Start(t, func(o *server.Options) {
		o.Accounts = []*server.Account{app, sys}
		o.SystemAccount = "SYS"
		o.Users = []*server.User{
			{Username: "auth", Password: pw, Account: app},
			{Username: "control", Password: pw, Account: app},
			{Username: "sys", Password: pw, Account: sys},
		}
		o.AuthCallout = &server.AuthCallout{Issuer: issuer, Account: "APP", AuthUsers: []string{"auth", "control", "sys"}}
		o.AuthTimeout = 2
	})
}

func newWorld(t testing.TB, kick string, mod ...func(*store.Options, *Config)) *world {
	t.Helper()
	// The store lives on its own JetStream server (the callout server's
	// accounts are config-defined and have no JetStream).
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t, natstest.JetStream(t.TempDir()))))
	if err != nil {
		t.Fatal(err)
	}
	var sopts store.Options
	cfg := Config{SigningSecret: secret}
	for _, m := range mod {
		m(&sopts, &cfg)
	}
	st, err := store.New(context.Background(), js, sopts)
	if err != nil {
		t.Fatal(err)
	}
	acc, _ := nkeys.CreateAccount()
	accPub, _ := acc.PublicKey()
	srv := calloutServer(t, accPub)
	cfg.Issuer, cfg.Enrollments = acc, st
	if b, ok := cfg.Leases.(*rendezvousLeases); ok {
		b.store = st
	} else if cfg.Leases != nil {
		cfg.Leases = st
	}
	switch kick {
	case "sys":
		cfg.Kicker = SysKicker{Conn: natstest.Connect(t, srv, nats.UserInfo("sys", pw))}
	case "embedded":
		cfg.Kicker = KickFunc(func(_ context.Context, _ string, cid uint64) error { return srv.DisconnectClientByID(cid) })
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(natstest.Connect(t, srv, nats.UserInfo("auth", pw)), st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return &world{srv: srv, store: st, responder: r, control: natstest.Connect(t, srv, nats.UserInfo("control", pw))}
}

func (w *world) enroll(t testing.TB, ws, pubkey string) (store.Enrollment, string) {
	t.Helper()
	e, err := w.store.UpsertEnrollment(context.Background(), store.FinalizeInput{WorkspaceID: ws, Pubkey: pubkey, OS: "linux"})
	if err != nil {
		t.Fatal(err)
	}
	return e, bearer(t, ws, e.ID, time.Now())
}

// agentConn connects with the bearer as the CONNECT auth token.
func (w *world) agentConn(bearer string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Token(bearer), nats.Timeout(3 * time.Second), nats.NoReconnect()}, opts...)
	return nats.Connect(w.srv.ClientURL(), opts...)
}

var refused = regexp.MustCompile(`(?i)auth|denied|violation|invalid|timeout`)

func serve(t testing.TB, nc *nats.Conn, subject, reply string) *nats.Subscription {
	t.Helper()
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(reply)) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

func TestCalloutIntegration(t *testing.T) {
	w := newWorld(t, "sys")
	ea, ba := w.enroll(t, wsA, "pk-a")
	eb, bb := w.enroll(t, wsB, "pk-b")

	// 1. A's agent connects with its bearer and serves its subject.
	var errsMu sync.Mutex
	var asyncErrs []error
	agentA, err := w.agentConn(ba, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		errsMu.Lock()
		asyncErrs = append(asyncErrs, err)
		errsMu.Unlock()
	}))
	if err != nil {
		t.Fatalf("agent A connect: %v", err)
	}
	defer agentA.Close()
	serve(t, agentA, "agent."+wsA+"."+ea.ID+".rpc", "pong-from-agent-A")
	msg, err := w.control.Request("agent."+wsA+"."+ea.ID+".rpc", []byte("ping"), 2*time.Second)
	if err != nil || string(msg.Data) != "pong-from-agent-A" {
		t.Fatalf("control → A: %v %v", msg, err)
	}

	// B's agent serves B's subject and records what reaches it.
	agentB, err := w.agentConn(bb)
	if err != nil {
		t.Fatalf("agent B connect: %v", err)
	}
	defer agentB.Close()
	var bGot sync.Map
	if _, err := agentB.Subscribe("agent."+wsB+"."+eb.ID+".rpc", func(m *nats.Msg) { bGot.Store(m.Subject, true); _ = m.Respond([]byte("pong-from-agent-B")) }); err != nil {
		t.Fatal(err)
	}
	_ = agentB.Flush()

	// 2. A's agent cannot subscribe to, publish on, or request B's subjects.
	bSubj := "agent." + wsB + "." + eb.ID + ".rpc"
	var leaked sync.Map
	if _, err := agentA.Subscribe("agent."+wsB+".>", func(m *nats.Msg) { leaked.Store(m.Subject, true) }); err != nil {
		t.Fatal(err)
	}
	_ = agentA.Publish(bSubj, []byte("hello B"))
	_ = agentA.Flush()
	if _, err := agentA.Request(bSubj, []byte("ping"), time.Second); err == nil {
		t.Fatal("A's request to B's machine succeeded")
	}
	// The control plane does reach B, and A's sneaky subscription sees none of it.
	if msg, err := w.control.Request(bSubj, []byte("ping"), 2*time.Second); err != nil || string(msg.Data) != "pong-from-agent-B" {
		t.Fatalf("control → B: %v", err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		errsMu.Lock()
		defer errsMu.Unlock()
		var pub, sub bool
		for _, e := range asyncErrs {
			s := strings.ToLower(e.Error())
			pub = pub || strings.Contains(s, "permissions violation for publish")
			sub = sub || strings.Contains(s, "permissions violation for subscription")
		}
		if !pub || !sub {
			return fmt.Errorf("violations so far: %v", asyncErrs)
		}
		return nil
	})
	leaked.Range(func(k, _ any) bool { t.Errorf("A received B's message on %v", k); return true })
	if _, ok := bGot.Load(bSubj); !ok {
		t.Fatal("B did not get the control plane's request")
	}
	bGot.Range(func(k, _ any) bool {
		// Only the control plane's request reached B.
		if k != bSubj {
			t.Errorf("B got %v", k)
		}
		return true
	})

	// 3. Invalid, expired, wrong-secret, missing and enroll tokens cannot connect.
	wrong, _, _ := enroll.MintBearer("other", wsA, ea.ID, time.Now())
	enrollTok, _, _ := enroll.MintEnrollToken(secret, wsA, "", true, time.Now())
	for name, tok := range map[string]string{
		"invalid":      "oge_not.a.valid.bearer",
		"expired":      bearer(t, wsA, ea.ID, time.Now().Add(-enroll.BearerTTL-time.Minute)),
		"wrong secret": wrong,
		"enroll token": enrollTok,
		"unknown":      bearer(t, wsA, "11111111-0000-4000-8000-000000000000", time.Now()),
	} {
		nc, err := w.agentConn(tok)
		if err == nil {
			nc.Close()
			t.Errorf("%s bearer connected", name)
		} else if !refused.MatchString(err.Error()) {
			t.Errorf("%s: unexpected error %v", name, err)
		}
	}
	if nc, err := nats.Connect(w.srv.ClientURL(), nats.Timeout(3*time.Second), nats.NoReconnect()); err == nil {
		nc.Close()
		t.Error("no token connected")
	}

	// 4 + revocation: revoking A cuts its live connection within seconds,
	// and its (still unexpired) bearer is refused on the next connect.
	closed := make(chan struct{})
	agentA.SetClosedHandler(func(*nats.Conn) { close(closed) })
	revokedAt := time.Now()
	if ok, err := w.store.RevokeEnrollment(context.Background(), wsA, ea.ID); !ok || err != nil {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	select {
	case <-closed:
		t.Logf("revoked connection cut after %v", time.Since(revokedAt))
	case <-time.After(5 * time.Second):
		t.Fatal("revoked agent still connected after 5s")
	}
	if nc, err := w.agentConn(ba); err == nil {
		nc.Close()
		t.Fatal("revoked bearer connected")
	} else if !refused.MatchString(err.Error()) {
		t.Fatalf("revoked: %v", err)
	}
	// B is untouched.
	if !agentB.IsConnected() {
		t.Fatal("revoking A disconnected B")
	}
}

// No agent may subscribe to an inbox but its own: neither the reference's
// _INBOX.> nor the Go control plane's private prefix; A still answers
// through the allow-responses permission.
func TestRepliesAreNotReadableByOtherAgents(t *testing.T) {
	w := newWorld(t, "")
	ea, ba := w.enroll(t, wsA, "pk-a")
	_, bb := w.enroll(t, wsB, "pk-b")
	agentA, err := w.agentConn(ba)
	if err != nil {
		t.Fatal(err)
	}
	defer agentA.Close()
	serve(t, agentA, "agent."+wsA+"."+ea.ID+".rpc", "secret-reply-of-A")

	var violations atomic.Int32
	agentB, err := w.agentConn(bb, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			violations.Add(1)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer agentB.Close()
	var snooped atomic.Int32
	for _, subj := range []string{"_INBOX.>", control.InboxPrefix + ".>", ">"} {
		if _, err := agentB.Subscribe(subj, func(*nats.Msg) { snooped.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	_ = agentB.Flush()

	ctl := natstest.Connect(t, w.srv, nats.UserInfo("control", pw), nats.CustomInboxPrefix(control.InboxPrefix))
	for i := 0; i < 5; i++ {
		msg, err := ctl.Request("agent."+wsA+"."+ea.ID+".rpc", []byte("ping"), 2*time.Second)
		if err != nil || string(msg.Data) != "secret-reply-of-A" {
			t.Fatalf("control → A over the private inbox: %v %v", msg, err)
		}
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if violations.Load() < 3 { // the _INBOX.>, _OGCTL.> and > subscriptions are refused
			return fmt.Errorf("%d violations", violations.Load())
		}
		return nil
	})
	_ = agentB.Flush()
	if n := snooped.Load(); n != 0 {
		t.Fatalf("agent B read %d messages meant for the control plane", n)
	}
}

// Next-revision connections (CONNECT name opengeni-agent/connection/<uuid>):
// one live runner per enrollment. A second runner with cloned credentials
// is denied while the first one's lease lives, admitted once it lapses or is
// released (GoingOffline); the first runner's own reconnects are admitted;
// v1 connections (no instance) hold no lease.
func TestConnectionLease(t *testing.T) {
	var offset atomic.Int64 // the store's clock runs ahead by this many ns
	w := newWorld(t, "", func(o *store.Options, c *Config) {
		o.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		c.Leases = struct{ Leases }{} // replaced by the world's store
	})
	e, b := w.enroll(t, wsA, "pk-lease")
	name := func(inst string) nats.Option { return nats.Name(subject.ConnectionNamePrefix + inst) }
	first, second := uuid.NewString(), uuid.NewString()
	nc1, err := w.agentConn(b, name(first))
	if err != nil {
		t.Fatalf("first runner: %v", err)
	}
	defer nc1.Close()
	refused := 0
	for i := 0; i < 3; i++ {
		if nc, err := w.agentConn(b, name(second)); err == nil {
			nc.Close()
			t.Fatal("a second live runner with cloned credentials connected")
		}
		refused++
	}
	t.Logf("ATTACK class=cloned-credentials-second-runner attempts=3 refused=%d", refused)
	if nc, err := w.agentConn(b, name(first)); err != nil { // the first runner reconnecting
		t.Fatalf("reconnect of the lease holder: %v", err)
	} else {
		nc.Close()
	}
	if nc, err := w.agentConn(b); err != nil { // a v1 connection holds no lease
		t.Fatalf("v1 connection: %v", err)
	} else {
		nc.Close()
	}
	// The lease lapses without heartbeats: the second runner is admitted.
	offset.Store(int64(store.ConnectionLeaseTTL + time.Second))
	nc2, err := w.agentConn(b, name(second))
	if err != nil {
		t.Fatalf("after the lease lapsed: %v", err)
	}
	nc2.Close()
	// GoingOffline releases it at once.
	offset.Store(0)
	if err := w.store.ReleaseConnection(context.Background(), wsA, e.ID, second); err != nil {
		t.Fatal(err)
	}
	nc3, err := w.agentConn(b, name(first))
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	nc3.Close()
}

// rendezvousLeases holds each lease claim until a second claim for the same
// enrollment arrives, then lets both reach the store at once: the two
// callouts are provably in flight together (a serial responder never gets
// the second claim, and both connections time out).
type rendezvousLeases struct {
	store Leases
	mu    sync.Mutex
	met   map[string]chan struct{}
}

func (b *rendezvousLeases) ClaimConnection(ctx context.Context, ws, id, instance string) error {
	b.mu.Lock()
	ch, second := b.met[ws+"."+id]
	if !second {
		ch = make(chan struct{})
		b.met[ws+"."+id] = ch
	} else {
		close(ch)
	}
	b.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.store.ClaimConnection(ctx, ws, id, instance)
}

// Two runners with one cloned credential connect at the same moment through
// the concurrent callout: their lease claims race (compare-and-set) and
// exactly one is admitted, every round.
func TestConcurrentCalloutAdmitsOneOfRacingClones(t *testing.T) {
	leases := &rendezvousLeases{met: map[string]chan struct{}{}}
	w := newWorld(t, "", func(_ *store.Options, c *Config) { c.Leases = leases })
	const rounds = 8
	for round := range rounds {
		_, b := w.enroll(t, wsA, fmt.Sprintf("pk-race-%d", round))
		type result struct {
			nc  *nats.Conn
			err error
		}
		results := make(chan result, 2)
		for range 2 {
			go func() {
				nc, err := w.agentConn(b, nats.Name(subject.ConnectionNamePrefix+uuid.NewString()))
				results <- result{nc, err}
			}()
		}
		admitted := 0
		var errs []error
		for range 2 {
			r := <-results
			if r.err == nil {
				admitted++
				defer r.nc.Close()
			} else {
				errs = append(errs, r.err)
			}
		}
		if admitted != 1 {
			t.Fatalf("round %d: %d of 2 racing clones admitted (errors %v)", round, admitted, errs)
		}
		if !refused.MatchString(errs[0].Error()) {
			t.Fatalf("round %d: the loser's error %v", round, errs[0])
		}
	}
	t.Logf("ATTACK class=cloned-credentials-racing-connect rounds=%d admitted-one-each=%d", rounds, rounds)
}

// Two responders on one cluster share the callout through the queue group:
// each connection is answered (and remembered) by one of them, and on
// revocation each kicks the connections it admitted, so all are cut.
func TestRespondersShareCalloutsAndKickTheirOwn(t *testing.T) {
	w := newWorld(t, "embedded", func(_ *store.Options, c *Config) { c.MaxConnsPerAgent = 64 })
	r2, err := New(w.responder.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Start(natstest.Connect(t, w.srv, nats.UserInfo("auth", pw)), w.store); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Close)
	e, b := w.enroll(t, wsA, "pk-shared")
	remembered := func(r *Responder) int {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.conns[wsA+"."+e.ID])
	}
	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	// The queue group picks a member at random: connect until both
	// answered.
	for len(conns) < 40 && (remembered(w.responder) == 0 || remembered(r2) == 0) {
		nc, err := w.agentConn(b)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
		if got := remembered(w.responder) + remembered(r2); got != len(conns) {
			t.Fatalf("%d connections, %d remembered: a callout answered by both responders", len(conns), got)
		}
	}
	if remembered(w.responder) == 0 || remembered(r2) == 0 {
		t.Fatalf("one responder answered all %d callouts (%d, %d)", len(conns), remembered(w.responder), remembered(r2))
	}
	if _, err := w.store.RevokeEnrollment(context.Background(), wsA, e.ID); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		for i, nc := range conns {
			if !nc.IsClosed() {
				return fmt.Errorf("connection %d of %d still connected", i, len(conns))
			}
		}
		return nil
	})
}

// A next-revision connection's user JWT lives at most 300 s.
func TestConnectionJWTLifetime(t *testing.T) {
	u := newUnit(t)
	req, _ := u.request(t, bearer(t, wsA, "agent-a", uNow), subject.ConnectionNamePrefix+"11111111-1111-4111-8111-111111111111")
	d, err := u.r.Authorize(context.Background(), req)
	if err != nil || d.Error != "" {
		t.Fatal(d, err)
	}
	uc, _ := jwt.DecodeUserClaims(d.UserJWT)
	if uc.Expires != uNow.Add(ConnectionJWTTTL).Unix() {
		t.Fatalf("exp %d, want now+300", uc.Expires)
	}
	req, _ = u.request(t, bearer(t, wsA, "agent-a", uNow))
	d, _ = u.r.Authorize(context.Background(), req)
	uc, _ = jwt.DecodeUserClaims(d.UserJWT)
	if bc, _ := enroll.VerifyBearer(secret, bearer(t, wsA, "agent-a", uNow), uNow); uc.Expires != bc.Exp {
		t.Fatalf("v1 exp %d, want the bearer's %d", uc.Expires, bc.Exp)
	}
}

// The embedded-server kicker (DisconnectClientByID) cuts a revoked machine too.
func TestRevokeKicksEmbedded(t *testing.T) {
	w := newWorld(t, "embedded")
	e, b := w.enroll(t, wsA, "pk")
	nc, err := w.agentConn(b)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := w.store.RevokeEnrollment(context.Background(), wsA, e.ID); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 5*time.Second, func() error {
		if !nc.IsClosed() {
			return errors.New("still connected")
		}
		return nil
	})
	// Re-enrolling the same pubkey re-activates the same id with a new
	// credential generation: the bearer from before the revocation (which
	// may be the stolen one) stays dead; a new one works.
	re, err := w.store.UpsertEnrollment(context.Background(), store.FinalizeInput{WorkspaceID: wsA, Pubkey: "pk", OS: "linux"})
	if err != nil || re.ID != e.ID || re.Generation() != 2 {
		t.Fatalf("re-activated %+v %v", re, err)
	}
	if nc, err := w.agentConn(b); err == nil {
		nc.Close()
		t.Fatal("a bearer from before the revocation connected")
	}
	fresh, _, err := enroll.MintBearerGeneration(secret, wsA, e.ID, re.Generation(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	nc2, err := w.agentConn(fresh)
	if err != nil {
		t.Fatalf("new generation: %v", err)
	}
	nc2.Close()
}

// BenchmarkConnect: connections authorized per second and p50 connect
// latency through the callout, against the same server's password login
// (the control user bypasses the callout) as the baseline.
func BenchmarkConnect(b *testing.B) {
	w := newWorld(b, "")
	_, tok := w.enroll(b, wsA, "pk")
	run := func(b *testing.B, opts ...nats.Option) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t0 := time.Now()
			nc, err := nats.Connect(w.srv.ClientURL(), append(opts, nats.NoReconnect())...)
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			nc.Close()
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "conns/s")
	}
	b.Run("callout", func(b *testing.B) { run(b, nats.Token(tok)) })
	// A next-revision connection: the lease claim (a KV read and
	// compare-and-set) and the short JWT on top.
	lw := newWorld(b, "", func(_ *store.Options, c *Config) { c.Leases = struct{ Leases }{} })
	_, ltok := lw.enroll(b, wsA, "pk")
	inst := nats.Name(subject.ConnectionNamePrefix + uuid.NewString())
	b.Run("callout-connection", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			t0 := time.Now()
			nc, err := nats.Connect(lw.srv.ClientURL(), nats.Token(ltok), inst, nats.NoReconnect())
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
			nc.Close()
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(len(lat))/b.Elapsed().Seconds(), "conns/s")
	})
	b.Run("baseline", func(b *testing.B) { run(b, nats.UserInfo("control", pw)) })
}
