// Package iplimit is the per-client request limiter shared by the enrollment
// API and the stream relay: token buckets keyed on the client address, and
// the rule that finds that address.
//
// The client address is the socket's peer address. Forwarding headers are
// believed only when the peer is a configured trusted proxy; then the client
// is the right-most X-Forwarded-For entry that is not itself a trusted proxy
// (each proxy appends the address it saw, so entries to the left of the
// first untrusted one may be forged by the client). A client can therefore
// not pick its own bucket by rotating X-Forwarded-For or X-Real-IP.
package iplimit

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Resolver finds a request's client address. The zero value trusts no proxy.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver trusts forwarding headers from peers inside trusted.
func NewResolver(trusted []netip.Prefix) *Resolver {
	return &Resolver{trusted: trusted}
}

// ErrBadPrefix reports an unparsable trusted-proxy entry.
var ErrBadPrefix = errors.New("iplimit: not an IP address or CIDR prefix")

// ParsePrefixes parses a comma- or space-separated list of CIDR prefixes or
// bare addresses (a bare address is its own /32 or /128). "" is no prefix.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("%w: %q", ErrBadPrefix, f)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", ErrBadPrefix, f)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

func (r *Resolver) isTrusted(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerAddr is the socket peer of req (RemoteAddr), or false when net/http
// left something that is not an address (a non-TCP listener).
func peerAddr(req *http.Request) (netip.Addr, bool) {
	host := req.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if h, _, err := net.SplitHostPort(s); err == nil { // "1.2.3.4:5678", "[::1]:80"
		s = h
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// ClientIP is the address that keys req's rate limits: the socket peer,
// unless the peer is a trusted proxy (see the package comment). It returns
// RemoteAddr unchanged when that is not an IP address.
func (r *Resolver) ClientIP(req *http.Request) string {
	peer, ok := peerAddr(req)
	if !ok {
		return req.RemoteAddr
	}
	if !r.isTrusted(peer) {
		return peer.String()
	}
	client := peer
	if xff := req.Header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops := strings.Split(strings.Join(xff, ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, ok := parseHop(hops[i])
			if !ok {
				// Garbage where a trusted proxy should have written an
				// address: stop at the last address a trusted hop vouched for.
				break
			}
			client = a
			if !r.isTrusted(a) {
				break
			}
		}
		return client.String()
	}
	if a, ok := parseHop(req.Header.Get("X-Real-IP")); ok {
		return a.String()
	}
	return client.String()
}

// Key is the bucket key of a client address: IPv6 clients are keyed by
// their /64 (one host usually owns a whole /64), everything else as is.
func Key(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil || !a.Is6() || a.Is4In6() {
		return ip
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// Bucket is a token bucket: Capacity tokens, refilled at Refill per second.
// A Capacity of 0 or less disables the limit.
type Bucket struct {
	Capacity int
	Refill   float64
}

// RetryAfter is the whole seconds until one token is back (at least 1).
func (b Bucket) RetryAfter() int {
	if b.Refill <= 0 {
		return 60
	}
	return max(1, int(1/b.Refill+0.999))
}

// maxKeys bounds the table; past it, idle (full) buckets are swept, and if
// none are, the table is reset (fail open, never unbounded).
const maxKeys = 65536

// Limiter is one route's per-client token buckets. It is safe for
// concurrent use.
type Limiter struct {
	b   Bucket
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*entry
}

type entry struct {
	l    *rate.Limiter
	last time.Time
}

// New makes a limiter; now is the clock (nil: time.Now).
func New(b Bucket, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{b: b, now: now, m: map[string]*entry{}}
}

// Bucket is the limiter's bucket.
func (l *Limiter) Bucket() Bucket { return l.b }

// Allow takes one token from ip's bucket (see [Key]); false means refuse.
func (l *Limiter) Allow(ip string) bool {
	if l.b.Capacity <= 0 {
		return true
	}
	k := Key(ip)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[k]
	if !ok {
		if len(l.m) >= maxKeys {
			l.sweep(now)
		}
		e = &entry{l: rate.NewLimiter(rate.Limit(l.b.Refill), l.b.Capacity)}
		l.m[k] = e
	}
	e.last = now
	return e.l.AllowN(now, 1)
}

// sweep drops buckets idle long enough to be full again (never, when they
// do not refill).
func (l *Limiter) sweep(now time.Time) {
	if l.b.Refill > 0 {
		full := time.Duration(float64(l.b.Capacity) / l.b.Refill * float64(time.Second))
		for k, e := range l.m {
			if now.Sub(e.last) > full {
				delete(l.m, k)
			}
		}
	}
	if len(l.m) >= maxKeys {
		clear(l.m)
	}
}
