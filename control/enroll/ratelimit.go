package enroll

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Bucket is a token bucket: Capacity tokens, refilled at Refill per second.
type Bucket struct {
	Capacity int
	Refill   float64
}

// RateLimits are the per-IP buckets of the agent-side routes (control.md
// §6.2).
type RateLimits struct {
	Start, Poll, Lookup, Exchange Bucket
}

// DefaultRateLimits: start (10, 0.5), poll (60, 2), lookup (30, 1), exchange
// (20, 0.5).
var DefaultRateLimits = RateLimits{
	Start:    Bucket{10, 0.5},
	Poll:     Bucket{60, 2},
	Lookup:   Bucket{30, 1},
	Exchange: Bucket{20, 0.5},
}

// maxLimiterKeys bounds the per-IP table; past it, idle (full) buckets are
// swept, and if none are, the table is reset (fail open, never unbounded).
const maxLimiterKeys = 65536

// ipLimiter is one route's per-IP token buckets.
type ipLimiter struct {
	b   Bucket
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*ipEntry
}

type ipEntry struct {
	l    *rate.Limiter
	last time.Time
}

func newIPLimiter(b Bucket, now func() time.Time) *ipLimiter {
	return &ipLimiter{b: b, now: now, m: map[string]*ipEntry{}}
}

// allow takes one token from ip's bucket; false means 429.
func (l *ipLimiter) allow(ip string) bool {
	if l.b.Capacity <= 0 {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.m[ip]
	if !ok {
		if len(l.m) >= maxLimiterKeys {
			l.sweep(now)
		}
		e = &ipEntry{l: rate.NewLimiter(rate.Limit(l.b.Refill), l.b.Capacity)}
		l.m[ip] = e
	}
	e.last = now
	return e.l.AllowN(now, 1)
}

// sweep drops buckets idle long enough to be full again.
func (l *ipLimiter) sweep(now time.Time) {
	full := time.Duration(float64(l.b.Capacity) / l.b.Refill * float64(time.Second))
	for k, e := range l.m {
		if now.Sub(e.last) > full {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxLimiterKeys {
		clear(l.m)
	}
}

// ClientIP is the reference's client IP: the first X-Forwarded-For hop, else
// X-Real-IP, else "unknown". Deploy behind a proxy that sets these headers.
func ClientIP(r *http.Request) string {
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
		first, _, _ := strings.Cut(xff, ",")
		if first = strings.TrimSpace(first); first != "" {
			return first
		}
	}
	if ip := strings.TrimSpace(r.Header.Get("X-Real-IP")); ip != "" {
		return ip
	}
	return "unknown"
}
