package token

import (
	"bufio"
	"encoding/base64"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var fixtureNow = time.Unix(1700000000, 0)

// loadFixture parses testdata/relay-tokens.txt the way the reference test
// does: trimmed lines, '#' comments and blanks skipped, key=value split at the
// first '='.
func loadFixture(t testing.TB) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/relay-tokens.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("fixture line without '=': %q", line)
		}
		kv[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kv
}

func atoi(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func fixtureViewerClaims(t testing.TB, kv map[string]string) ViewerClaims {
	return ViewerClaims{
		WorkspaceID: kv["workspaceId"], SessionID: kv["sessionId"], ViewerID: kv["viewerId"],
		LeaseEpoch: uint64(atoi(t, kv["leaseEpoch"])), Mode: ModeView,
		Port: uint32(atoi(t, kv["port"])), Exp: atoi(t, kv["exp"]),
	}
}

func fixtureAgentClaims(t testing.TB, kv map[string]string) AgentClaims {
	return AgentClaims{WorkspaceID: kv["workspaceId"], AgentID: kv["agentId"], Exp: atoi(t, kv["exp"])}
}

func TestFixtureViewerTokenVerifies(t *testing.T) {
	kv := loadFixture(t)
	got, err := VerifyViewer(kv["secret"], kv["ogs"], fixtureNow)
	if err != nil {
		t.Fatalf("VerifyViewer: %v", err)
	}
	if want := fixtureViewerClaims(t, kv); got != want {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
	if got.LeaseEpoch != 7 || got.Port != 7681 || got.Mode != "view" {
		t.Fatalf("unexpected claims %+v", got)
	}
}

func TestFixtureAgentTokenVerifies(t *testing.T) {
	kv := loadFixture(t)
	got, err := VerifyAgent(kv["secret"], kv["ogr"], fixtureNow)
	if err != nil {
		t.Fatalf("VerifyAgent: %v", err)
	}
	if want := fixtureAgentClaims(t, kv); got != want {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
}

func TestFixtureTokensUnderWrongSecretAreBadSignature(t *testing.T) {
	kv := loadFixture(t)
	if _, err := VerifyViewer("a-different-secret", kv["ogs"], fixtureNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("ogs under wrong secret: err = %v, want ErrBadSignature", err)
	}
	if _, err := VerifyAgent("a-different-secret", kv["ogr"], fixtureNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("ogr under wrong secret: err = %v, want ErrBadSignature", err)
	}
}

func TestMintReproducesFixtureBytes(t *testing.T) {
	kv := loadFixture(t)
	ogs, err := MintViewer(kv["secret"], fixtureViewerClaims(t, kv), fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	if ogs != kv["ogs"] {
		t.Fatalf("minted ogs differs:\n got %s\nwant %s", ogs, kv["ogs"])
	}
	ogr, err := MintAgent(kv["secret"], fixtureAgentClaims(t, kv), fixtureNow)
	if err != nil {
		t.Fatal(err)
	}
	if ogr != kv["ogr"] {
		t.Fatalf("minted ogr differs:\n got %s\nwant %s", ogr, kv["ogr"])
	}
	// The decoded payload is exactly the TS JSON (key order, no whitespace).
	payload, _, _ := strings.Cut(strings.TrimPrefix(ogr, AgentPrefix), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	want := `{"workspaceId":"11111111-1111-4111-8111-111111111111","agentId":"44444444-4444-4444-8444-444444444444","exp":4102444800}`
	if string(raw) != want {
		t.Fatalf("payload %s, want %s", raw, want)
	}
}

func TestVerifyErrorKinds(t *testing.T) {
	const secret = "unit-secret"
	now := time.Unix(1000, 0)
	good, err := MintViewer(secret, ViewerClaims{WorkspaceID: "ws-1", SessionID: "s", ViewerID: "v", LeaseEpoch: 3, Port: 7681, Exp: 2000}, now)
	if err != nil {
		t.Fatal(err)
	}
	expired, _ := MintViewer(secret, ViewerClaims{WorkspaceID: "ws-1", Exp: 500}, now)
	atNow, _ := MintViewer(secret, ViewerClaims{WorkspaceID: "ws-1", Exp: 1000}, now)
	agent, _ := MintAgent(secret, AgentClaims{WorkspaceID: "ws-1", AgentID: "ag-1", Exp: 2000}, now)
	// Signed payloads that fail the claims check.
	signed := func(json string) string {
		p := base64.RawURLEncoding.EncodeToString([]byte(json))
		return ViewerPrefix + p + "." + sign(secret, p)
	}
	tampered := []byte(good)
	tampered[len(ViewerPrefix)+5] ^= 1 // flip a payload character

	cases := []struct {
		name string
		tok  string
		want error
	}{
		{"tampered payload", string(tampered), ErrBadSignature},
		{"wrong secret", mustMintViewer(t, "other", now), ErrBadSignature},
		{"expired", expired, ErrExpired},
		{"agent token as viewer", agent, ErrBadPrefix},
		{"no dot", "ogs_no-dot", ErrMalformed},
		{"empty payload", "ogs_.sig", ErrMalformed},
		{"not a token", "not-a-token", ErrBadPrefix},
		{"empty", "", ErrBadPrefix},
		{"empty signature", strings.Split(good, ".")[0] + ".", ErrBadSignature},
		{"padded signature", good + "=", ErrBadSignature},
		{"missing field", signed(`{"workspaceId":"w","sessionId":"s","viewerId":"v","leaseEpoch":1,"mode":"view","exp":2000}`), ErrBadClaims},
		{"null field", signed(`{"workspaceId":null,"sessionId":"s","viewerId":"v","leaseEpoch":1,"mode":"view","port":1,"exp":2000}`), ErrBadClaims},
		{"negative epoch", signed(`{"workspaceId":"w","sessionId":"s","viewerId":"v","leaseEpoch":-1,"mode":"view","port":1,"exp":2000}`), ErrBadClaims},
		{"port too big", signed(`{"workspaceId":"w","sessionId":"s","viewerId":"v","leaseEpoch":1,"mode":"view","port":4294967296,"exp":2000}`), ErrBadClaims},
		{"string exp", signed(`{"workspaceId":"w","sessionId":"s","viewerId":"v","leaseEpoch":1,"mode":"view","port":1,"exp":"2000"}`), ErrBadClaims},
		{"not json", signed(`nope`), ErrBadClaims},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyViewer(secret, tc.tok, now)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}

	if c, err := VerifyViewer(secret, good, now); err != nil || c.WorkspaceID != "ws-1" || c.LeaseEpoch != 3 || c.Port != 7681 || c.Mode != ModeView {
		t.Fatalf("good token: %+v, %v", c, err)
	}
	if _, err := VerifyViewer(secret, atNow, now); err != nil {
		t.Fatalf("exp == now must still verify: %v", err)
	}
	if c, err := VerifyAgent(secret, agent, now); err != nil || c.AgentID != "ag-1" {
		t.Fatalf("agent token: %+v, %v", c, err)
	}
	if _, err := VerifyAgent(secret, good, now); !errors.Is(err, ErrBadPrefix) {
		t.Fatalf("viewer token as agent: %v", err)
	}
	// Unknown JSON fields are ignored; a padded payload is accepted (trailing '=' stripped).
	if _, err := VerifyViewer(secret, signed(`{"workspaceId":"w","sessionId":"s","viewerId":"v","leaseEpoch":1,"mode":"x","port":1,"exp":2000,"extra":[1]}`), now); err != nil {
		t.Fatalf("unknown field: %v", err)
	}
	p := base64.RawURLEncoding.EncodeToString([]byte(`{"workspaceId":"w","agentId":"a","exp":2000}`)) + "=="
	if _, err := VerifyAgent(secret, AgentPrefix+p+"."+sign(secret, p), now); err != nil {
		t.Fatalf("padded payload: %v", err)
	}
}

func mustMintViewer(t *testing.T, secret string, now time.Time) string {
	t.Helper()
	tok, err := MintViewer(secret, ViewerClaims{WorkspaceID: "ws-1", SessionID: "s", ViewerID: "v"}, now)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestMintDefaultsAndRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0)
	tok, err := MintViewer("k", ViewerClaims{WorkspaceID: "w", SessionID: "s", ViewerID: "v", LeaseEpoch: 9,
		SubjectID: "subj", AuthorityEpoch: 4}, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyViewer("k", tok, now)
	if err != nil {
		t.Fatal(err)
	}
	want := ViewerClaims{WorkspaceID: "w", SessionID: "s", ViewerID: "v", LeaseEpoch: 9, Mode: ModeView,
		Port: DefaultViewerPort, Exp: now.Unix() + 120, SubjectID: "subj", AuthorityEpoch: 4}
	if c != want {
		t.Fatalf("round trip = %+v, want %+v", c, want)
	}
	if _, err := VerifyViewer("k", tok, now.Add(121*time.Second)); !errors.Is(err, ErrExpired) {
		t.Fatalf("after TTL: %v", err)
	}
	atok, err := MintAgent("", AgentClaims{WorkspaceID: "w", AgentID: "a"}, now)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := VerifyAgent("", atok, now)
	if err != nil || ac.Exp != now.Unix()+30*24*3600 {
		t.Fatalf("agent round trip: %+v %v", ac, err)
	}
	if _, err := MintViewer("k", ViewerClaims{Mode: "admin"}, now); !errors.Is(err, ErrInvalidMint) {
		t.Fatalf("bad mode minted: %v", err)
	}
	// HTML characters are not escaped (JSON.stringify compatibility).
	tok, _ = MintAgent("k", AgentClaims{WorkspaceID: "<&>", AgentID: "a", Exp: 5}, now)
	payload, _, _ := strings.Cut(strings.TrimPrefix(tok, AgentPrefix), ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	if string(raw) != `{"workspaceId":"<&>","agentId":"a","exp":5}` {
		t.Fatalf("payload %s", raw)
	}
}

func FuzzVerify(f *testing.F) {
	kv := loadFixture(f)
	f.Add(kv["ogs"])
	f.Add(kv["ogr"])
	f.Add("ogs_.")
	f.Add("ogs_a.b")
	f.Add("ogr_eyJ9.x")
	f.Add("")
	secret := kv["secret"]
	f.Fuzz(func(t *testing.T, tok string) {
		vc, verr := VerifyViewer(secret, tok, fixtureNow)
		ac, aerr := VerifyAgent(secret, tok, fixtureNow)
		// Only the two genuine fixture tokens may verify; a random string never does.
		if verr == nil && tok != kv["ogs"] {
			t.Fatalf("random viewer token verified: %q → %+v", tok, vc)
		}
		if aerr == nil && tok != kv["ogr"] {
			t.Fatalf("random agent token verified: %q → %+v", tok, ac)
		}
		for _, err := range []error{verr, aerr} {
			if err != nil && !isKind(err) {
				t.Fatalf("error %v is not one of the sentinel kinds", err)
			}
		}
	})
}

func isKind(err error) bool {
	for _, k := range []error{ErrBadPrefix, ErrMalformed, ErrBadSignature, ErrBadClaims, ErrExpired} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// The machine scope (agentId) is optional: minted only when set, verified
// when present, and tokens without it are the reference's bytes.
func TestViewerAgentScope(t *testing.T) {
	now := time.Unix(1000, 0)
	c := ViewerClaims{WorkspaceID: "w", SessionID: "s", ViewerID: "v", Port: 7681, Exp: 2000}
	unscoped, _ := MintViewer("k", c, now)
	raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(strings.Split(unscoped, ".")[0], ViewerPrefix))
	if strings.Contains(string(raw), "agentId") {
		t.Fatalf("unscoped token carries agentId: %s", raw)
	}
	c.AgentID = "machine-a"
	scoped, _ := MintViewer("k", c, now)
	got, err := VerifyViewer("k", scoped, now)
	if err != nil || got.AgentID != "machine-a" {
		t.Fatalf("scoped: %+v %v", got, err)
	}
	if got, err := VerifyViewer("k", unscoped, now); err != nil || got.AgentID != "" {
		t.Fatalf("unscoped: %+v %v", got, err)
	}
	c.AgentID = strings.Repeat("a", 513)
	if _, err := MintViewer("k", c, now); !errors.Is(err, ErrInvalidMint) {
		t.Fatalf("long agentId: %v", err)
	}
}

// A first-generation ogr_ token is byte-equal to the reference mint (no
// credentialGeneration key); a later generation round-trips.
func TestAgentTokenCredentialGeneration(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	base := AgentClaims{WorkspaceID: "w1", AgentID: "a1", Exp: now.Unix() + 60}
	plain, err := MintAgent("s", base, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, gen := range []int{0, 1} {
		c := base
		c.CredentialGeneration = gen
		if tok, err := MintAgent("s", c, now); err != nil || tok != plain {
			t.Fatalf("generation %d minted %q (%v), want the reference shape %q", gen, tok, err, plain)
		}
	}
	if c, err := VerifyAgent("s", plain, now); err != nil || c.Generation() != 1 {
		t.Fatalf("reference token: %+v %v", c, err)
	}
	c := base
	c.CredentialGeneration = 3
	tok, err := MintAgent("s", c, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := VerifyAgent("s", tok, now); err != nil || got.Generation() != 3 {
		t.Fatalf("generation 3: %+v %v", got, err)
	}
}
