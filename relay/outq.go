package relay

import "sync"

// outq is a connection's bounded outbound queue (relay.md §5). Producers
// never block: push fails when the queue is full or finished. finish marks
// the end of the stream, optionally with one last message (a StreamClose)
// queued beyond the bound; the drainer writes what is queued and then drops
// the socket.
//
// No goroutine waits on an idle queue: a drainer is started when the first
// message arrives and exits when the queue is empty, so an idle connection
// costs one goroutine (its reader), not two.
type outq struct {
	mu       sync.Mutex
	items    [][]byte
	limit    int
	finished bool
	running  bool // a drainer is live (or the queue is paused for the replay)
	start    func()
}

// newOutq returns a paused queue: pushes are kept until resume, so the
// replay written at attach goes out before any live frame.
func newOutq(limit int) *outq {
	return &outq{limit: limit, running: true}
}

func (q *outq) push(b []byte) bool {
	q.mu.Lock()
	if q.finished || len(q.items) >= q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, b)
	spawn := q.kick()
	q.mu.Unlock()
	if spawn {
		q.start()
	}
	return true
}

// finish ends the queue; final, when non-nil, is written last. It is a no-op
// on a queue already finished.
func (q *outq) finish(final []byte) {
	q.mu.Lock()
	if q.finished {
		q.mu.Unlock()
		return
	}
	q.finished = true
	if final != nil {
		q.items = append(q.items, final)
	}
	spawn := q.kick()
	q.mu.Unlock()
	if spawn {
		q.start()
	}
}

// resume ends the pause and starts a drainer with start for whatever is queued.
func (q *outq) resume(start func()) {
	q.mu.Lock()
	q.start = start
	q.running = false
	spawn := q.kick()
	q.mu.Unlock()
	if spawn {
		q.start()
	}
}

// kick reports whether a drainer must be started; q.mu is held.
func (q *outq) kick() bool {
	if q.running || q.start == nil || (len(q.items) == 0 && !q.finished) {
		return false
	}
	q.running = true
	return true
}

// take swaps out everything queued (reusing spare's storage). When nothing is
// queued it returns stop=true and, unless the queue is finished, marks the
// drainer gone; finished tells the drainer to drop the socket.
func (q *outq) take(spare [][]byte) (items [][]byte, stop, finished bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		if !q.finished {
			q.running = false
		}
		return nil, true, q.finished
	}
	items = q.items
	q.items = spare[:0]
	return items, false, q.finished
}
