package enroll

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/relay/token"
)

const (
	secret = "test-signing-secret"
	wsA    = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
	wsB    = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
)

var tNow = time.Date(2026, 6, 22, 12, 0, 0, 0, time.UTC)

// forge signs an arbitrary payload with the real envelope.
func forge(prefix, secret, payload string) string {
	tok, _ := token.Mint(prefix, secret, rawJSON(payload))
	return tok
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }

func TestEnrollTokenRoundTrip(t *testing.T) {
	tok, c, err := MintEnrollToken(secret, wsA, "acct-1", true, tNow)
	if err != nil || !strings.HasPrefix(tok, "oget_") {
		t.Fatalf("mint: %q %v", tok, err)
	}
	// Payload key order is the schema's.
	p, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok[:strings.LastIndexByte(tok, '.')], "oget_"))
	want := `{"typ":"enroll","workspaceId":"` + wsA + `","accountId":"acct-1","allowScreenControl":true,"iat":1782129600,"exp":1782133200}`
	if string(p) != want {
		t.Fatalf("payload %s\nwant    %s", p, want)
	}
	got, err := VerifyEnrollToken(secret, tok, tNow)
	if err != nil || got != c || got.Exp-got.Iat != 3600 {
		t.Fatalf("verify: %+v %v", got, err)
	}
	// exp == now is still valid; a second later is not.
	if _, err := VerifyEnrollToken(secret, tok, time.Unix(c.Exp, 0)); err != nil {
		t.Fatalf("exp == now: %v", err)
	}
	if _, err := VerifyEnrollToken(secret, tok, time.Unix(c.Exp+1, 0)); !errors.Is(err, token.ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
}

func TestEnrollTokenRejected(t *testing.T) {
	tok, _, _ := MintEnrollToken(secret, wsA, "acct", false, tNow)
	bearer, _, _ := MintBearer(secret, wsA, "agent-1", tNow)
	dot := strings.LastIndexByte(tok, '.')
	tampered := tok[:dot-2] + "xx" + tok[dot:]
	last := byte('A')
	if tok[len(tok)-1] == 'A' {
		last = 'B'
	}
	flipped := tok[:len(tok)-1] + string(last)
	cases := map[string]string{
		"wrong secret":   "",
		"tampered":       tampered,
		"signature":      flipped,
		"oge_ bearer":    bearer,
		"wrong typ":      forge(EnrollTokenPrefix, secret, `{"typ":"bearer","workspaceId":"`+wsA+`","accountId":"","allowScreenControl":false,"iat":1,"exp":9999999999}`),
		"missing typ":    forge(EnrollTokenPrefix, secret, `{"workspaceId":"`+wsA+`","accountId":"","allowScreenControl":false,"iat":1,"exp":9999999999}`),
		"string exp":     forge(EnrollTokenPrefix, secret, `{"typ":"enroll","workspaceId":"`+wsA+`","accountId":"","allowScreenControl":false,"iat":1,"exp":"9999999999"}`),
		"expired":        forge(EnrollTokenPrefix, secret, `{"typ":"enroll","workspaceId":"`+wsA+`","accountId":"","allowScreenControl":false,"iat":1,"exp":2}`),
		"not json":       forge(EnrollTokenPrefix, secret, `not json`),
		"empty":          "",
		"prefix only":    "oget_",
		"no dot":         "oget_abc",
		"dot first":      "oget_.abc",
		"garbage":        "oget_@@@.###",
		"other prefix":   strings.Replace(tok, "oget_", "ogs_", 1),
		"newline inside": "oget_ey\nJ9." + "x",
	}
	for name, tk := range cases {
		s := secret
		if name == "wrong secret" {
			tk, s = tok, "other-secret"
		}
		if _, err := VerifyEnrollToken(s, tk, tNow); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: accepted (%v)", name, err)
		}
	}
}

func TestBearerRoundTripAndDomains(t *testing.T) {
	tok, c, err := MintBearer(secret, wsA, "agent-1", tNow)
	if err != nil || !strings.HasPrefix(tok, "oge_") {
		t.Fatal(err)
	}
	p, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(tok[:strings.LastIndexByte(tok, '.')], "oge_"))
	want := `{"workspaceId":"` + wsA + `","agentId":"agent-1","enrollmentId":"agent-1","subjectPrefix":"agent.` + wsA + `.agent-1","exp":1784721600}`
	if string(p) != want {
		t.Fatalf("payload %s\nwant    %s", p, want)
	}
	if got, err := VerifyBearer(secret, tok, tNow); err != nil || got != c {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if _, err := VerifyBearer(secret, tok, time.Unix(c.Exp+1, 0)); !errors.Is(err, ErrInvalidToken) {
		t.Fatal("expired bearer accepted")
	}
	if _, err := VerifyBearer("nope", tok, tNow); !errors.Is(err, ErrInvalidToken) {
		t.Fatal("wrong secret accepted")
	}
	// An oget_ token is not an oge_ bearer, and vice versa.
	et, _, _ := MintEnrollToken(secret, wsA, "", true, tNow)
	if _, err := VerifyBearer(secret, et, tNow); !errors.Is(err, ErrInvalidToken) {
		t.Fatal("enroll token accepted as a bearer")
	}
	if _, err := VerifyEnrollToken(secret, tok, tNow); !errors.Is(err, ErrInvalidToken) {
		t.Fatal("bearer accepted as an enroll token")
	}
	if _, err := VerifyBearer(secret, "oge_not.a.valid.bearer", tNow); !errors.Is(err, ErrInvalidToken) {
		t.Fatal("junk bearer accepted")
	}
	if _, err := VerifyBearer(secret, forge(BearerPrefix, secret, `{"workspaceId":"w","agentId":"","enrollmentId":"","subjectPrefix":"","exp":9999999999}`), tNow); err == nil {
		t.Fatal("empty ids accepted")
	}
	if _, _, err := MintBearer("", wsA, "a", tNow); err == nil {
		t.Fatal("minted without a secret")
	}
}

func TestCodes(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		u := NewUserCode()
		if !UserCodePattern.MatchString(u) || strings.ContainsAny(u, "IO01") {
			t.Fatalf("user code %q", u)
		}
		d := NewDeviceCode()
		if len(d) != 43 || strings.ContainsAny(d, "+/=") || seen[d] {
			t.Fatalf("device code %q", d)
		}
		seen[d] = true
	}
	if normalizeUserCode(" abcd-efgh ") != "ABCD-EFGH" || normalizeUserCode("abcdefgh") != "ABCD-EFGH" {
		t.Fatal("normalize")
	}
}

func FuzzVerifyBearer(f *testing.F) {
	good, _, _ := MintBearer(secret, wsA, "agent-1", tNow)
	et, _, _ := MintEnrollToken(secret, wsA, "", true, tNow)
	for _, s := range []string{good, et, "oge_", "oge_.", "oge_a.b", "oge_not.a.valid.bearer", good + "x", strings.ToUpper(good)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := VerifyBearer(secret, tok, tNow)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		// Anything accepted must carry the signature of its own payload.
		if !strings.HasPrefix(tok, BearerPrefix) || c.AgentID == "" || c.Exp < tNow.Unix() {
			t.Fatalf("accepted %q as %+v", tok, c)
		}
		if _, err := VerifyBearer("another secret", tok, tNow); err == nil {
			t.Fatalf("%q verifies under two secrets", tok)
		}
	})
}

func FuzzVerifyEnrollToken(f *testing.F) {
	good, _, _ := MintEnrollToken(secret, wsA, "acct", true, tNow)
	b, _, _ := MintBearer(secret, wsA, "agent-1", tNow)
	for _, s := range []string{good, b, "oget_", "oget_.", "oget_a.b", good[:len(good)-3]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := VerifyEnrollToken(secret, tok, tNow)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("unwrapped error %v", err)
			}
			return
		}
		if !strings.HasPrefix(tok, EnrollTokenPrefix) || c.Typ != EnrollTokenType || c.WorkspaceID == "" {
			t.Fatalf("accepted %q as %+v", tok, c)
		}
		if _, err := VerifyBearer(secret, tok, tNow); err == nil {
			t.Fatalf("%q is both an enroll token and a bearer", tok)
		}
	})
}
