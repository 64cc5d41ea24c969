package iplimit

import (
	"errors"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestClientIP(t *testing.T) {
	trusted, err := ParsePrefixes("127.0.0.1, 10.0.0.0/8 ::1")
	if err != nil {
		t.Fatal(err)
	}
	r := NewResolver(trusted)
	for _, tc := range []struct {
		name, remote, xff, realIP, want string
	}{
		{"untrusted peer ignores headers", "198.51.100.1:4000", "1.1.1.1", "2.2.2.2", "198.51.100.1"},
		{"untrusted v6 peer", "[2001:db8::1]:4000", "1.1.1.1", "", "2001:db8::1"},
		{"trusted peer without headers", "127.0.0.1:4000", "", "", "127.0.0.1"},
		{"trusted peer, X-Real-IP", "127.0.0.1:4000", "", " 3.3.3.3 ", "3.3.3.3"},
		{"trusted peer, garbage X-Real-IP", "127.0.0.1:4000", "", "nope", "127.0.0.1"},
		{"right-most untrusted hop", "127.0.0.1:4000", "6.6.6.6, 4.4.4.4, 10.1.2.3", "9.9.9.9", "4.4.4.4"},
		{"forged left hops ignored", "10.0.0.9:4000", "evil, 5.5.5.5", "", "5.5.5.5"},
		{"all hops trusted: left-most", "127.0.0.1:4000", "10.0.0.2, 10.0.0.3", "", "10.0.0.2"},
		{"garbage stops at the last vouched hop", "127.0.0.1:4000", "7.7.7.7, junk, 10.0.0.3", "", "10.0.0.3"},
		{"hop with a port", "127.0.0.1:4000", "8.8.8.8:1234", "", "8.8.8.8"},
		{"v4-mapped peer", "[::ffff:127.0.0.1]:4000", "4.4.4.4", "", "4.4.4.4"},
		{"trusted v6 peer", "[::1]:4000", "[2001:db8::7]:99", "", "2001:db8::7"},
		{"no address", "@", "4.4.4.4", "", "@"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.remote
			if tc.xff != "" {
				req.Header.Set("X-Forwarded-For", tc.xff)
			}
			if tc.realIP != "" {
				req.Header.Set("X-Real-IP", tc.realIP)
			}
			if got := r.ClientIP(req); got != tc.want {
				t.Fatalf("ClientIP = %q, want %q", got, tc.want)
			}
		})
	}
	// Several X-Forwarded-For header lines form one list.
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "127.0.0.1:1"
	req.Header.Add("X-Forwarded-For", "1.1.1.1")
	req.Header.Add("X-Forwarded-For", "2.2.2.2, 10.0.0.1")
	if got := r.ClientIP(req); got != "2.2.2.2" {
		t.Fatalf("multi-line XFF: %q", got)
	}
	// The zero resolver trusts nobody.
	if got := (&Resolver{}).ClientIP(req); got != "127.0.0.1" {
		t.Fatalf("zero resolver: %q", got)
	}
}

func TestParsePrefixes(t *testing.T) {
	for _, bad := range []string{"10.0.0.0/33", "nope", "1.2.3.4/x"} {
		if _, err := ParsePrefixes(bad); !errors.Is(err, ErrBadPrefix) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	ps, err := ParsePrefixes(" 10.1.2.3/8 ,,fd00::/8 ")
	if err != nil || len(ps) != 2 || ps[0].String() != "10.0.0.0/8" || ps[1].String() != "fd00::/8" {
		t.Fatalf("%v %v", ps, err)
	}
	if ps, err := ParsePrefixes(""); err != nil || ps != nil {
		t.Fatalf("empty: %v %v", ps, err)
	}
}

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"1.2.3.4":             "1.2.3.4",
		"2001:db8:1:2:3::4":   "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::": "2001:db8:1:2::/64",
		"@":                   "@",
	} {
		if got := Key(in); got != want {
			t.Fatalf("Key(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(Bucket{Capacity: 2, Refill: 1}, func() time.Time { return now })
	//lint:ignore SA4000 each Allow takes a token: the repeated call is the test
	if !l.Allow("a") || !l.Allow("a") || l.Allow("a") {
		t.Fatal("capacity 2")
	}
	if !l.Allow("b") {
		t.Fatal("b has its own bucket")
	}
	// Two addresses of one IPv6 /64 share a bucket.
	if !l.Allow("2001:db8::1") || !l.Allow("2001:db8::2") || l.Allow("2001:db8::3") {
		t.Fatal("/64 keying")
	}
	now = now.Add(time.Second)
	if !l.Allow("a") || l.Allow("a") {
		t.Fatal("refill 1/s")
	}
	if !New(Bucket{}, nil).Allow("x") {
		t.Fatal("zero bucket is unlimited")
	}
	if got := (Bucket{Capacity: 1, Refill: 0.5}).RetryAfter(); got != 2 {
		t.Fatalf("RetryAfter %d", got)
	}
}

// Any headers and peer address give either the unparsable RemoteAddr back
// or a valid address; never a panic, and never a header value from an
// untrusted peer.
func FuzzClientIP(f *testing.F) {
	f.Add("127.0.0.1:1", "1.1.1.1, 10.0.0.1", "2.2.2.2")
	f.Add("[::1]:1", "junk,,[2001:db8::1]:80", "")
	f.Add("198.51.100.1:1", "1.1.1.1", "x")
	trusted, _ := ParsePrefixes("127.0.0.0/8, ::1, 10.0.0.0/8")
	r := NewResolver(trusted)
	f.Fuzz(func(t *testing.T, remote, xff, realIP string) {
		req := httptest.NewRequest("GET", "/", nil)
		req.RemoteAddr = remote
		req.Header.Set("X-Forwarded-For", xff)
		req.Header.Set("X-Real-IP", realIP)
		got := r.ClientIP(req)
		if got == remote {
			return
		}
		a, err := netip.ParseAddr(got)
		if err != nil {
			t.Fatalf("ClientIP = %q: not an address", got)
		}
		peer, ok := peerAddr(req)
		if ok && !r.isTrusted(peer) && a != peer {
			t.Fatalf("untrusted peer %v keyed as %v", peer, a)
		}
	})
}

func BenchmarkClientIPAllow(b *testing.B) {
	trusted, _ := ParsePrefixes("10.0.0.0/8")
	r := NewResolver(trusted)
	l := New(Bucket{Capacity: 1 << 30, Refill: 1 << 30}, nil)
	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "10.1.2.3:4000"
	req.Header.Set("X-Forwarded-For", "203.0.113.7, 10.0.0.5")
	for b.Loop() {
		l.Allow(r.ClientIP(req))
	}
}
