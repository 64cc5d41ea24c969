package capture

import (
	"context"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"sync"
	"sync/atomic"
	"time"
)

// Pipes reads a command's stdout and stderr through pipes the package owns,
// so that when to stop reading is decided here and not by a fixed delay
// after the exit: output the command wrote before it exited is always read,
// however late the reader runs; reading stops early only for a stream that a
// descendant still holds open, with nothing pending, silent for the grace
// period.
type Pipes struct {
	Stdout, Stderr *Buffer
	streams        [2]*stream
	start          time.Time
}

// stream is one pipe and the goroutine reading it into a Buffer, or into a
// sink (AttachWriters).
type stream struct {
	buf    *Buffer
	sink   io.Writer
	r, w   *os.File
	done   chan struct{}
	last   atomic.Int64 // when the last byte arrived, ns since Pipes.start
	cut    atomic.Bool  // reading was stopped on purpose
	start  time.Time
	closeW sync.Once
}

// Attach gives cmd fresh stdout and stderr pipes, each kept up to limit
// bytes, and starts reading them. Call Started after cmd.Start (whether it
// succeeded or not), then Drain after cmd.Wait.
func Attach(cmd *osexec.Cmd, limit int) (*Pipes, error) {
	p := &Pipes{Stdout: NewBuffer(limit), Stderr: NewBuffer(limit), start: time.Now()}
	return p, p.attach(cmd, [2]*Buffer{p.Stdout, p.Stderr}, [2]io.Writer{})
}

// AttachWriters is Attach for streaming: each stream's bytes go to its
// writer as they arrive, in reads of at most StreamChunk bytes, and nothing
// is kept (Stdout and Stderr are nil). A writer may block: reading that
// stream stops until it returns, so the child blocks once the pipe is full
// (flow control, never a lost byte). A writer error stops reading the
// stream (reported by Cut). Drain works as for Attach.
func AttachWriters(cmd *osexec.Cmd, stdout, stderr io.Writer) (*Pipes, error) {
	p := &Pipes{start: time.Now()}
	return p, p.attach(cmd, [2]*Buffer{}, [2]io.Writer{stdout, stderr})
}

// StreamChunk is the largest read AttachWriters hands a writer.
const StreamChunk = 128 << 10

// Cut reports, per stream, whether reading stopped before the stream ended.
func (p *Pipes) Cut() (stdout, stderr bool) {
	return p.streams[0].cut.Load(), p.streams[1].cut.Load()
}

func (p *Pipes) attach(cmd *osexec.Cmd, bufs [2]*Buffer, sinks [2]io.Writer) error {
	for i := range p.streams {
		r, w, err := os.Pipe()
		if err != nil {
			p.Started()
			p.stop()
			return fmt.Errorf("output pipe: %w", err)
		}
		if sinks[i] != nil {
			growPipe(w)
		}
		s := &stream{buf: bufs[i], sink: sinks[i], r: r, w: w, done: make(chan struct{}), start: p.start}
		p.streams[i] = s
		go s.read()
	}
	// *os.File: the child writes straight into the pipe; os/exec starts no
	// copying goroutine and closes nothing behind our back.
	cmd.Stdout, cmd.Stderr = p.streams[0].w, p.streams[1].w
	return nil
}

// Started closes this process's copies of the write ends: from now on a
// stream ends when the command and every descendant holding it have closed
// it.
func (p *Pipes) Started() {
	for _, s := range p.streams {
		if s != nil {
			s.closeW.Do(func() { s.w.Close() })
		}
	}
}

// stop ends reading at once (a failed start) and waits for the readers.
func (p *Pipes) stop() {
	for _, s := range p.streams {
		if s != nil {
			s.stopReading()
			<-s.done
		}
	}
}

// Drain waits, after the command exited, until both streams ended. A stream
// still open is read on as long as bytes keep coming or are waiting in the
// pipe; it is cut (reported by Fit) once a descendant holds it open with
// nothing pending for grace, or, after ctx is done, once it has been read
// for grace more. A stream whose writers are all gone is always read to
// its end: those bytes are finite and the command's own.
func (p *Pipes) Drain(ctx context.Context, grace time.Duration) {
	exited := time.Since(p.start).Nanoseconds()
	var wg sync.WaitGroup
	for _, s := range p.streams {
		wg.Go(func() { s.drain(ctx, grace, exited) })
	}
	wg.Wait()
}

func (s *stream) read() {
	defer close(s.done)
	var err error
	if s.sink != nil {
		_, err = io.CopyBuffer(s.sink, activityReader{s}, make([]byte, StreamChunk))
	} else {
		_, err = s.buf.ReadFrom(activityReader{s})
	}
	if err != nil && !s.cut.Load() {
		// A read error other than our own stop (EIO, say) ends the stream
		// early too; the reply says it was cut.
		s.cut.Store(true)
	}
	if s.buf != nil {
		s.buf.cut = s.cut.Load()
	}
	s.r.Close()
}

func (s *stream) stopReading() {
	s.cut.Store(true)
	s.r.Close() // unblocks the pending Read with os.ErrClosed
}

// drain waits for s to end; see Pipes.Drain.
func (s *stream) drain(ctx context.Context, grace time.Duration, exited int64) {
	tick := time.NewTicker(min(max(grace/4, time.Millisecond), 50*time.Millisecond))
	defer tick.Stop()
	ctxDone := ctx.Done()
	var doneAt time.Time
	for {
		select {
		case <-s.done:
			return
		case <-ctxDone:
			ctxDone, doneAt = nil, time.Now()
			continue
		case <-tick.C:
		}
		state := pipeStateOf(s.r)
		switch {
		case state == pipeWritersGone:
			// Only bytes already written are left: read them all.
			continue
		case !doneAt.IsZero():
			// Past the deadline a writer that never pauses gets one more
			// grace, no more.
			if time.Since(doneAt) < grace {
				continue
			}
		case state == pipeDataPending:
			continue
		default: // idle or unknown: a descendant holds the pipe
			idleSince := max(s.last.Load(), exited)
			if time.Since(s.start).Nanoseconds()-idleSince < grace.Nanoseconds() {
				continue
			}
		}
		s.stopReading()
		<-s.done
		return
	}
}

// activityReader stamps every arrival, resetting the idle timer.
type activityReader struct{ s *stream }

func (a activityReader) Read(b []byte) (int, error) {
	n, err := a.s.r.Read(b)
	if n > 0 {
		a.s.last.Store(time.Since(a.s.start).Nanoseconds())
	}
	return n, err
}

// pipeState is what a pipe holds right now, without consuming it.
type pipeState int

const (
	pipeUnknown     pipeState = iota // the platform cannot tell
	pipeIdle                         // a writer holds it open, nothing to read
	pipeDataPending                  // bytes are waiting to be read
	pipeWritersGone                  // every writer closed it: the rest is finite
)
