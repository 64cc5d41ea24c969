// Package backoff is the one reconnect backoff of the module: full jitter
// (a delay drawn uniformly in [0, ceiling]) with a capped, growing ceiling,
// as agent.md §3.4 specifies for the agent's NATS and relay reconnects.
package backoff

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/coder/quartz"
)

// Policy computes the ceiling for an attempt number.
type Policy struct {
	Base time.Duration // ceiling of the first exponential attempt
	Cap  time.Duration // the ceiling never exceeds this
	// FastAttempts attempts (0..FastAttempts-1) use FastCeiling before the
	// exponential phase starts; 0 disables the fast phase.
	FastAttempts int
	FastCeiling  time.Duration
}

// Standard is the agent's reconnect policy: 20 quick attempts under 3 s, then
// 1, 2, 4, 8, 10, 10, ... seconds.
func Standard() Policy {
	return Policy{Base: time.Second, Cap: 10 * time.Second, FastAttempts: 20, FastCeiling: 3 * time.Second}
}

// Exponential is min(cap, base*2^attempt) with no fast phase.
func Exponential(base, cap time.Duration) Policy { return Policy{Base: base, Cap: cap} }

// Ceiling is the upper bound of the delay drawn for an attempt.
func (p Policy) Ceiling(attempt int) time.Duration {
	if attempt < 0 {
		attempt = 0
	}
	if attempt < p.FastAttempts {
		return min(p.FastCeiling, p.Cap)
	}
	n := attempt - p.FastAttempts
	d := p.Base
	for i := 0; i < n; i++ {
		if d >= p.Cap || d > p.Cap/2 {
			return p.Cap
		}
		d *= 2
	}
	return min(d, p.Cap)
}

// Jitter draws a delay uniformly in [0, ceiling].
func Jitter(ceiling time.Duration) time.Duration {
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(ceiling) + 1))
}

// Backoff tracks attempts for one reconnecting thing. Safe for concurrent use.
type Backoff struct {
	Policy Policy
	// Clock times Sleep; nil is the real clock (tests pass a quartz.Mock).
	Clock quartz.Clock

	mu      sync.Mutex
	attempt int
}

// Next returns the delay for the next attempt and counts it.
func (b *Backoff) Next() time.Duration {
	b.mu.Lock()
	a := b.attempt
	b.attempt++
	b.mu.Unlock()
	return Jitter(b.Policy.Ceiling(a))
}

// Reset returns to attempt 0 after a success.
func (b *Backoff) Reset() {
	b.mu.Lock()
	b.attempt = 0
	b.mu.Unlock()
}

// Attempt is the number of delays drawn since the last Reset.
func (b *Backoff) Attempt() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attempt
}

// Sleep waits for the next delay on b.Clock, returning early with ctx's error.
func (b *Backoff) Sleep(ctx context.Context) error { return SleepOn(ctx, b.Clock, b.Next()) }

// SleepCtx waits d unless ctx ends first (then it returns ctx's error); d ≤ 0
// only checks ctx.
func SleepCtx(ctx context.Context, d time.Duration) error { return SleepOn(ctx, nil, d) }

// SleepOn is SleepCtx timed by clk (nil: the real clock). Its timer is
// tagged "backoff" for quartz traps.
func SleepOn(ctx context.Context, clk quartz.Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	if clk == nil {
		clk = quartz.NewReal()
	}
	t := clk.NewTimer(d, "backoff")
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
