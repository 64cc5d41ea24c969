package console

import (
	"context"
	"sync"
	"time"
)

// watched counts the browsers streaming a terminal or a desktop and when
// the last one left, so streams nobody watches are closed.
type watched struct {
	mu       sync.Mutex
	viewers  int
	lastSeen time.Time
}

func (w *watched) enter() {
	w.mu.Lock()
	w.viewers++
	w.mu.Unlock()
}

func (w *watched) leave() {
	w.mu.Lock()
	w.viewers--
	w.lastSeen = time.Now()
	w.mu.Unlock()
}

func (w *watched) idleFor(d time.Duration) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.viewers == 0 && time.Since(w.lastSeen) > d
}

// reapEvery is how often idle streams are looked for.
const reapEvery = time.Minute

// reapIdle removes from m (under mu) every entry idle for longer than idle,
// every interval until ctx ends, and closes each one outside the lock.
func reapIdle[T any](ctx context.Context, every time.Duration, mu *sync.Mutex, m map[string]T, idle time.Duration, isIdle func(T, time.Duration) bool, closeFn func(T)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var gone []T
		mu.Lock()
		for id, v := range m {
			if isIdle(v, idle) {
				gone = append(gone, v)
				delete(m, id)
			}
		}
		mu.Unlock()
		for _, v := range gone {
			closeFn(v)
		}
	}
}
