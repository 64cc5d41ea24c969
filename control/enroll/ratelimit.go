package enroll

import (
	"github.com/opengeni/opengeni-agent/internal/iplimit"
)

// Bucket is a token bucket: Capacity tokens, refilled at Refill per second.
type Bucket = iplimit.Bucket

// RateLimits are the per-IP buckets of the agent-side routes (control.md
// §6.2). The IP is the socket peer, or, from a trusted proxy
// ([Config.TrustedProxies]), the right-most untrusted X-Forwarded-For hop.
type RateLimits struct {
	Start, Poll, Lookup, Exchange Bucket
}

// DefaultRateLimits: start (10, 0.5), poll (60, 2), lookup (30, 1), exchange
// (20, 0.5).
var DefaultRateLimits = RateLimits{
	Start:    Bucket{Capacity: 10, Refill: 0.5},
	Poll:     Bucket{Capacity: 60, Refill: 2},
	Lookup:   Bucket{Capacity: 30, Refill: 1},
	Exchange: Bucket{Capacity: 20, Refill: 0.5},
}
