// Package logthrottle rate-limits repeated log lines: per key, the first
// line of an interval is logged and the rest are only counted; the next
// logged line reports how many were suppressed. A flood of identical
// refusals (a draining or busy agent) then costs one line per interval.
package logthrottle

import (
	"sync"
	"time"
)

// DefaultInterval is used when Throttle.Interval is zero.
const DefaultInterval = 10 * time.Second

// Throttle is safe for concurrent use. The zero value is ready; keys should
// come from a small fixed set (an error code, a message), as each is kept.
type Throttle struct {
	Interval time.Duration
	Now      func() time.Time // nil means time.Now

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	logged     time.Time // when the last line for the key was allowed
	suppressed int       // lines refused since then
}

// Allow reports whether a line for key should be logged now and, if so, how
// many lines for key were suppressed since the previous logged one.
func (t *Throttle) Allow(key string) (ok bool, suppressed int) {
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	interval := t.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	at := now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil {
		t.keys = map[string]*entry{}
	}
	e := t.keys[key]
	if e == nil {
		t.keys[key] = &entry{logged: at}
		return true, 0
	}
	if at.Sub(e.logged) < interval {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.logged, e.suppressed = at, 0
	return true, n
}
