package console

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Streams nobody watches are closed; watched ones, and ones left only just
// now, stay.
func TestReapIdleClosesOnlyUnwatchedStreams(t *testing.T) {
	var mu sync.Mutex
	watching, left, fresh := &watched{}, &watched{}, &watched{lastSeen: time.Now().Add(time.Hour)}
	watching.enter()
	left.enter()
	left.leave()
	m := map[string]*watched{"watching": watching, "left": left, "fresh": fresh}
	closed := make(chan *watched, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go reapIdle(ctx, time.Millisecond, &mu, m, 0, (*watched).idleFor, func(w *watched) { closed <- w })
	if got := <-closed; got != left {
		t.Fatalf("closed %+v, want the one every viewer left", got)
	}
	cancel()
	mu.Lock()
	defer mu.Unlock()
	if _, ok := m["left"]; ok || len(m) != 2 {
		t.Fatalf("left in the map: %v", m)
	}
	select {
	case w := <-closed:
		t.Fatalf("closed a watched stream too: %+v", w)
	default:
	}
}
