package relay

import (
	"math"
	"time"
)

// bucket is the per-side leaky (token) bucket of relay.md §5, counting
// StreamFrame data bytes. A new bucket starts full.
type bucket struct {
	capacity, rate, available float64
	last                      time.Time
}

func newBucket(capacity, ratePerSec uint64, now time.Time) bucket {
	c := float64(capacity)
	return bucket{capacity: c, rate: float64(ratePerSec), available: c, last: now}
}

// admit reports whether n bytes may pass at now. A frame larger than the
// burst passes once when the bucket is full, leaving it empty.
func (b *bucket) admit(n int, now time.Time) bool {
	if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.available = math.Min(b.capacity, b.available+b.rate*dt)
	}
	b.last = now
	need := float64(n)
	if need <= b.available {
		b.available -= need
		return true
	}
	if math.Abs(b.available-b.capacity) < 2.220446049250313e-16 {
		b.available = 0
		return true
	}
	return false
}
