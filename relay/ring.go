package relay

import (
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

// ringEntry is one retained StreamFrame: its seq and its wire bytes (tag
// included), ready to be written again on replay.
type ringEntry struct {
	seq  uint64
	wire []byte
}

// ring is the per-direction replay ring of relay.md §4: the most recent
// frames in arrival order, counting frames, evicting the oldest when full.
// Storage grows lazily up to capacity so idle channels stay small.
type ring struct {
	buf   []ringEntry
	start int // index of the oldest entry once buf is at capacity
	cap   int
}

func newRing(capacity int) *ring {
	if capacity < 1 {
		capacity = 1
	}
	return &ring{cap: capacity}
}

// push appends e and returns the new depth.
func (r *ring) push(e ringEntry) int {
	if len(r.buf) < r.cap {
		r.buf = append(r.buf, e)
		return len(r.buf)
	}
	r.buf[r.start] = e
	r.start = (r.start + 1) % r.cap
	return r.cap
}

// since returns, in arrival order, every retained entry with seq >= from.
func (r *ring) since(from uint64) []ringEntry {
	var out []ringEntry
	n := len(r.buf)
	for i := 0; i < n; i++ {
		e := r.buf[(r.start+i)%n]
		if e.seq >= from {
			out = append(out, e)
		}
	}
	return out
}

func (r *ring) len() int { return len(r.buf) }

// shift renumbers every retained frame by +delta (seq and wire bytes).
func (r *ring) shift(delta uint64) {
	for i := range r.buf {
		e := &r.buf[i]
		e.seq += delta
		if _, m, err := frame.Decode(e.wire); err == nil {
			if f, ok := m.(*agentpb.StreamFrame); ok {
				f.Seq = e.seq
				e.wire = frame.MustEncode(f)
			}
		}
	}
}
