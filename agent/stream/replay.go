package stream

// replayEntry is one sent frame, kept encoded so a resend is byte-identical
// (same seq, same produced_at_ms).
type replayEntry struct {
	seq  uint64
	wire []byte
	size int // data bytes (the bound counts payload, like the relay's rate limit)
}

// replayBuf keeps the most recent sent frames within maxFrames and maxBytes.
// The newest frame is always kept, however large. Not safe for concurrent
// use: the channel's run goroutine owns it.
type replayBuf struct {
	maxBytes, maxFrames int

	buf   []replayEntry // ring storage
	head  int           // index of the oldest entry
	n     int
	bytes int
}

func (r *replayBuf) push(e replayEntry) {
	for r.n > 0 && (r.n >= r.maxFrames || r.bytes+e.size > r.maxBytes) {
		r.popOldest()
	}
	if r.n == len(r.buf) { // full storage (below maxFrames): grow, unrolled from head
		nb := make([]replayEntry, min(max(2*len(r.buf), 16), max(r.maxFrames, 1)))
		for i := 0; i < r.n; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = e
	r.n++
	r.bytes += e.size
}

func (r *replayBuf) popOldest() {
	e := &r.buf[r.head]
	r.bytes -= e.size
	*e = replayEntry{}
	r.head = (r.head + 1) % len(r.buf)
	r.n--
}

// entries returns the kept frames, oldest first.
func (r *replayBuf) entries() []replayEntry {
	out := make([]replayEntry, r.n)
	for i := range out {
		out[i] = r.buf[(r.head+i)%len(r.buf)]
	}
	return out
}
