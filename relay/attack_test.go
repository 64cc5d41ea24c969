package relay

// Attack tests (issue 10): each tries what an attacker holding some
// credential would, counts the attempts and the refusals, fails if any
// attempt gets through, and logs "ATTACK class=<name> attempts=<n>
// refused=<m>".

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// machineQuery is the dial query of a channel of machine (ws, agent).
func machineQuery(ws, agent string, port uint32) string {
	return fmt.Sprintf("?ws=%s&agent=%s&port=%d", ws, agent, port)
}

func machineKey(ws, agent string, port uint32) *agentpb.StreamChannel {
	return &agentpb.StreamChannel{ChannelId: fmt.Sprintf("ch-%d", port), WorkspaceId: ws, AgentId: agent,
		Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: port}
}

func machineAgentOpen(t testing.TB, secret, ws, agent string, port uint32) *agentpb.StreamOpen {
	return machineAgentOpenGen(t, secret, ws, agent, port, 0)
}

// machineAgentOpenGen is machineAgentOpen with a token of credential
// generation gen (0: absent, as the reference mints a first generation).
func machineAgentOpenGen(t testing.TB, secret, ws, agent string, port uint32, gen int) *agentpb.StreamOpen {
	tok, err := token.MintAgent(secret, token.AgentClaims{WorkspaceID: ws, AgentID: agent, CredentialGeneration: gen}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &agentpb.StreamOpen{Channel: machineKey(ws, agent, port), Token: tok, Role: agentpb.StreamRole_STREAM_ROLE_AGENT}
}

// machineViewerOpen opens machine (ws, agent)'s channel with a viewer token
// scoped to scopeAgent ("" = workspace-wide).
func machineViewerOpen(t testing.TB, secret, ws, agent, scopeAgent string, port uint32) *agentpb.StreamOpen {
	tok, err := token.MintViewer(secret, token.ViewerClaims{WorkspaceID: ws, SessionID: uuid.NewString(),
		ViewerID: uuid.NewString(), Port: port, AgentID: scopeAgent}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &agentpb.StreamOpen{Channel: machineKey(ws, agent, port), Token: tok, Role: agentpb.StreamRole_STREAM_ROLE_CLIENT}
}

// refusedOpen reports whether the relay refused open with want (a rejected
// ack, then the socket dropped); an accepted open fails the test after
// counting, so the log line still shows what got through.
func (e *env) refusedOpen(query string, open *agentpb.StreamOpen, want string) bool {
	e.t.Helper()
	p, ack := e.connect(query, open)
	defer p.c.CloseNow()
	if ack.GetAccepted() {
		e.t.Errorf("open %s accepted, want refusal %q", query, want)
		return false
	}
	if got := ack.GetError().GetMessage(); got != want {
		e.t.Errorf("open %s refused with %q, want %q", query, got, want)
	}
	p.expectEnd()
	return true
}

func attackLog(t *testing.T, class string, attempts, refused int) {
	t.Helper()
	t.Logf("ATTACK class=%s attempts=%d refused=%d", class, attempts, refused)
	if refused != attempts {
		t.Fatalf("%s: %d of %d attempts got through", class, attempts-refused, attempts)
	}
}

// A viewer token scoped to machine A opens A's channels and nothing of any
// other machine; an unscoped (reference) token stays workspace-wide.
func TestAttackViewerTokenForAnotherMachine(t *testing.T) {
	e := newEnv(t, nil)
	const ws = testWS
	machineA, machineB := uuid.NewString(), uuid.NewString()
	const port = 7681
	agentB := e.mustConnect(machineQuery(ws, machineB, port), machineAgentOpen(t, testSecret, ws, machineB, port))
	// The scoped token works on its own machine.
	agentA := e.mustConnect(machineQuery(ws, machineA, port), machineAgentOpen(t, testSecret, ws, machineA, port))
	viewerA := e.mustConnect(machineQuery(ws, machineA, port), machineViewerOpen(t, testSecret, ws, machineA, machineA, port))
	agentA.send("for A's viewer")
	if f := viewerA.nextFrame(); string(f.GetData()) != "for A's viewer" {
		t.Fatalf("A's viewer got %q", f.GetData())
	}

	attempts, refused := 0, 0
	try := func(query string, open *agentpb.StreamOpen) {
		attempts++
		if e.refusedOpen(query, open, msgViewerAgent) {
			refused++
		}
	}
	for _, p := range []uint32{port, 6080, 7682} {
		// A's token, B's key in both the query and the StreamOpen.
		try(machineQuery(ws, machineB, p), machineViewerOpen(t, testSecret, ws, machineB, machineA, p))
		// With the next revision's pinned channel.
		try(machineQuery(ws, machineB, p)+fmt.Sprintf("&channel=ch-%d", p), machineViewerOpen(t, testSecret, ws, machineB, machineA, p))
		// A's token for a machine that does not exist (yet).
		try(machineQuery(ws, "never-enrolled", p), machineViewerOpen(t, testSecret, ws, "never-enrolled", machineA, p))
		// Case and whitespace variants of B's id do not match A either.
		try(machineQuery(ws, strings.ToUpper(machineB), p), machineViewerOpen(t, testSecret, ws, strings.ToUpper(machineB), machineA, p))
	}
	attackLog(t, "relay-viewer-token-other-machine", attempts, refused)
	// B's agent never saw a viewer: nothing was attached to its channel.
	if e.srv.reg.paired(routeKey{ws: ws, agent: machineB, port: port}) {
		t.Fatal("a viewer got attached to machine B's channel")
	}
	// The reference's unscoped token still opens any machine of its workspace.
	viewerB := e.mustConnect(machineQuery(ws, machineB, port), machineViewerOpen(t, testSecret, ws, machineB, "", port))
	agentB.send("for an unscoped viewer")
	if f := viewerB.nextFrame(); string(f.GetData()) != "for an unscoped viewer" {
		t.Fatalf("unscoped viewer got %q", f.GetData())
	}
}

// Expired, forged, truncated, wrong-prefix and cross-role tokens keep being
// refused (relay.md §2.1 order: prefix, structure, signature, claims, expiry).
func TestAttackBadTokens(t *testing.T) {
	e := newEnv(t, nil)
	now := time.Now()
	good := agentToken(t)
	goodViewer := viewerToken(t, viewerClaims(0, 7681))
	expiredAgent, _ := token.MintAgent(testSecret, token.AgentClaims{WorkspaceID: testWS, AgentID: testAgent, Exp: now.Unix() - 1}, now)
	expiredViewer := viewerClaims(0, 7681)
	expiredViewer.Exp = now.Unix() - 1
	forgedAgent, _ := token.MintAgent("guessed-secret", token.AgentClaims{WorkspaceID: testWS, AgentID: testAgent}, now)
	// A payload re-encoded with a later exp under the old signature.
	payload, sig, _ := strings.Cut(strings.TrimPrefix(good, token.AgentPrefix), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	extended := token.AgentPrefix + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), `"exp":`, `"exp":9`, 1))) + "." + sig
	agentRole, client := agentpb.StreamRole_STREAM_ROLE_AGENT, agentpb.StreamRole_STREAM_ROLE_CLIENT
	cases := []struct {
		role agentpb.StreamRole
		tok  string
		want string
	}{
		{agentRole, expiredAgent, "agent token: token is expired"},
		{agentRole, forgedAgent, "agent token: token signature is invalid"},
		{agentRole, extended, "agent token: token signature is invalid"},
		{agentRole, good[:len(good)-1], "agent token: token signature is invalid"},
		{agentRole, good[:len(good)/2], "agent token: token is malformed"}, // cut inside the payload
		{agentRole, strings.TrimSuffix(good, "."+sig), "agent token: token is malformed"},
		{agentRole, "ogx_" + strings.TrimPrefix(good, token.AgentPrefix), "agent token: token has the wrong prefix"},
		{agentRole, "OGR_" + strings.TrimPrefix(good, token.AgentPrefix), "agent token: token has the wrong prefix"},
		{agentRole, goodViewer, "agent token: token has the wrong prefix"},
		{agentRole, "", "agent token: token has the wrong prefix"},
		{agentRole, good + "=", "agent token: token signature is invalid"},
		{client, viewerToken(t, expiredViewer), "viewer token: token is expired"},
		{client, good, "viewer token: token has the wrong prefix"},
		{client, goodViewer[:len(goodViewer)-2], "viewer token: token signature is invalid"},
		{client, "ogs_.", "viewer token: token is malformed"},
	}
	refused := 0
	for _, tc := range cases {
		if e.refusedOpen(keyQuery(7681), &agentpb.StreamOpen{Channel: chanKey(7681, "ch-7681"), Token: tc.tok, Role: tc.role}, tc.want) {
			refused++
		}
	}
	attackLog(t, "relay-bad-tokens", len(cases), refused)
	if n := e.srv.Metrics().OpensAccepted.Load(); n != 0 {
		t.Fatalf("%d opens accepted", n)
	}
}

// The per-IP open limit keys on the socket address: rotating
// X-Forwarded-For / X-Real-IP from an untrusted peer does not buy a fresh
// bucket. From a trusted proxy the client named by X-Forwarded-For is keyed,
// and forged hops to its left do not change that.
func TestAttackHeaderSpoofedOpenRateLimit(t *testing.T) {
	const burst = 5
	statusOf := func(e *env, hdr http.Header) int {
		req, _ := http.NewRequest("GET", e.http+"/stream"+keyQuery(7681), nil)
		req.Header = hdr
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	spoof := func(i int, xffTail string) http.Header {
		h := http.Header{}
		h.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", i%250+1)+xffTail)
		h.Set("X-Real-IP", fmt.Sprintf("192.0.2.%d", i%250+1))
		return h
	}
	const attempts = 200
	for _, tc := range []struct {
		name, class string
		trusted     string
		budget      http.Header // what spends the budget
		xffTail     string      // appended to every spoofed XFF
	}{
		{"untrusted socket", "relay-ratelimit-header-spoof-untrusted", "", http.Header{}, ""},
		{"other proxy trusted", "relay-ratelimit-header-spoof-untrusted", "10.0.0.0/8", http.Header{}, ""},
		{"trusted proxy", "relay-ratelimit-header-spoof-trusted-proxy", "127.0.0.1/32",
			http.Header{"X-Forwarded-For": {"203.0.113.9"}}, ", 203.0.113.9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(o *Options) {
				o.OpenRateBurst, o.OpenRatePerSec = burst, 1
				o.Now = func() time.Time { return time.Unix(1e9, 0) } // no refill during the test
				if tc.trusted != "" {
					o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(tc.trusted)}
				}
			})
			for i := range burst {
				// A plain GET is not an upgrade: 426 from the WebSocket library, past the limit.
				if s := statusOf(e, tc.budget); s == http.StatusTooManyRequests {
					t.Fatalf("open %d inside the budget refused", i)
				}
			}
			refused := 0
			for i := range attempts {
				if statusOf(e, spoof(i, tc.xffTail)) == http.StatusTooManyRequests {
					refused++
				}
			}
			attackLog(t, tc.class, attempts, refused)
			if tc.trusted == "127.0.0.1/32" {
				h := http.Header{"X-Forwarded-For": {"203.0.113.10"}}
				if statusOf(e, h) == http.StatusTooManyRequests {
					t.Fatal("another client behind the trusted proxy shares the bucket")
				}
			}
		})
	}
	// The limit applies to real WebSocket opens too, with Retry-After.
	e := newEnv(t, func(o *Options) { o.OpenRateBurst, o.OpenRatePerSec = 1, 1 })
	e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))
	res, err := http.Get(e.http + "/stream" + keyQuery(7681))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusTooManyRequests || res.Header.Get("Retry-After") != "1" {
		t.Fatalf("second open: %d Retry-After %q", res.StatusCode, res.Header.Get("Retry-After"))
	}
}
