package enroll

import (
	"fmt"
	"net/netip"
	"testing"
)

// spoofHeaders are the forwarding headers an attacker rotates to get a fresh
// bucket per request.
func spoofHeaders(i int) []string {
	return []string{
		"X-Forwarded-For", fmt.Sprintf("198.51.%d.%d", i/250, i%250+1),
		"X-Real-IP", fmt.Sprintf("192.0.%d.%d", i/250, i%250+1),
	}
}

const pollPath = "/v1/enrollments/device/poll"

// exhaust spends the poll budget of the client the headers name.
func exhaust(t *testing.T, f *fixture, hdr ...string) {
	t.Helper()
	for i := range DefaultRateLimits.Poll.Capacity {
		if r := f.do(t, "POST", pollPath, "", map[string]any{"deviceCode": "x"}, hdr...); r.status == 429 {
			t.Fatalf("poll %d refused inside the budget", i)
		}
	}
}

// Attack: rotating X-Forwarded-For / X-Real-IP from a socket that is not a
// trusted proxy must not buy a fresh bucket (issue 10: 0 of 600 got 429).
func TestAttackHeaderSpoofedRateLimitUntrusted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
	}{
		{"no-proxy-configured", nil},
		{"other-proxy-configured", []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(c *Config) { c.TrustedProxies = tc.trusted })
			exhaust(t, f)
			const attempts = 600
			refused := 0
			for i := range attempts {
				if r := f.do(t, "POST", pollPath, "", map[string]any{"deviceCode": "x"}, spoofHeaders(i)...); r.status == 429 {
					refused++
				}
			}
			t.Logf("ATTACK class=api-ratelimit-header-spoof-untrusted attempts=%d refused=%d", attempts, refused)
			if refused != attempts {
				t.Fatalf("%d of %d header-spoofed polls got past the exhausted bucket", attempts-refused, attempts)
			}
		})
	}
}

// Attack: behind a trusted proxy, the client is the right-most untrusted
// X-Forwarded-For hop; what the client writes to the left of it (or in
// X-Real-IP) does not change its bucket, and another client keeps its own.
func TestAttackHeaderSpoofedRateLimitTrustedProxy(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}
	})
	const client = "203.0.113.7"
	// The edge proxy (10.0.0.5) appended the client; the loopback proxy appended the edge.
	exhaust(t, f, "X-Forwarded-For", client+", 10.0.0.5")
	const attempts = 600
	refused := 0
	for i := range attempts {
		h := spoofHeaders(i)
		h[1] = h[1] + ", " + client + ", 10.0.0.5" // forged hops left of the real client
		if r := f.do(t, "POST", pollPath, "", map[string]any{"deviceCode": "x"}, h...); r.status == 429 {
			refused++
		}
	}
	t.Logf("ATTACK class=api-ratelimit-header-spoof-trusted-proxy attempts=%d refused=%d", attempts, refused)
	if refused != attempts {
		t.Fatalf("%d of %d forged-hop polls got past the client's exhausted bucket", attempts-refused, attempts)
	}
	// Keyed per client, not per proxy: another client behind the proxy is served.
	if r := f.do(t, "POST", pollPath, "", map[string]any{"deviceCode": "x"}, "X-Forwarded-For", "203.0.113.8, 10.0.0.5"); r.status == 429 {
		t.Fatal("a second client behind the trusted proxy shares the first one's bucket")
	}
}
