package control

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/zeebo/blake3"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// ExecStreamOptions is a command run over op-stream, its output delivered
// as it arrives.
type ExecStreamOptions struct {
	ExecRequestOptions // Timeout 0 = unbounded (allowed only over op-stream, control.md §9)
	// Stdout and Stderr receive the output in order as it arrives (nil
	// discards). They are called from the caller's goroutine; a slow writer
	// slows the command (credit), never loses bytes.
	Stdout, Stderr io.Writer
	// Started, if set, is called with the op once the machine accepted it
	// (its id and position let another process reattach).
	Started func(*Op)
	Op      *OpOptions
}

// ExecStream runs a command over op-stream and returns its exit (code,
// timed_out, cancelled, blake3 digests and totals of stdout/stderr, failure
// code). When ctx ends first the op is cancelled on the machine (its
// process tree killed) and ctx's error returned, with the exit that says
// cancelled once the machine reported it (see Consume).
func (s *Session) ExecStream(ctx context.Context, opts ExecStreamOptions) (*agentpb.OpExit, error) {
	start := &agentpb.OpStart{Op: &agentpb.OpStart_Exec{Exec: &agentpb.ExecRequest{
		Command: opts.Argv, Shell: opts.Shell, Cwd: s.path(opts.Workdir), Env: opts.Env, Stdin: opts.Stdin,
	}}}
	if opts.Timeout > 0 {
		start.DeadlineMs = time.Now().Add(opts.Timeout).UnixMilli()
	}
	op, _, err := s.StartOp(ctx, start, opts.Op)
	if err != nil {
		return nil, err
	}
	defer op.Close()
	if opts.Started != nil {
		opts.Started(op)
	}
	return op.Consume(ctx, func(ch agentpb.OpChannel, b []byte) error {
		w := opts.Stdout
		if ch == agentpb.OpChannel_OP_CHANNEL_STDERR {
			w = opts.Stderr
		}
		if w == nil {
			return nil
		}
		_, err := w.Write(b)
		return err
	})
}

// CancelGrace bounds how long Consume waits, after ctx ended, for the
// machine to confirm the cancelled op ended.
const CancelGrace = 10 * time.Second

// Consume delivers the op's data in order to onData until the exit frame,
// which it returns. When onData fails the op is cancelled on the machine
// and the error returned. When ctx ends first the op is cancelled too, and
// Consume goes on delivering (for at most CancelGrace) until the exit
// frame, so the process tree is gone when it returns ctx's error with
// that exit (nil if the machine did not confirm in time).
func (o *Op) Consume(ctx context.Context, onData func(agentpb.OpChannel, []byte) error) (*agentpb.OpExit, error) {
	exit, err := o.consume(ctx, onData)
	var lost *OpLostError
	if err == nil || errors.As(err, &lost) {
		return exit, err
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), CancelGrace)
	defer cancel()
	if _, cerr := o.Cancel(cctx); cerr != nil || ctx.Err() == nil {
		return nil, err
	}
	exit, _ = o.consume(cctx, onData)
	return exit, err
}

func (o *Op) consume(ctx context.Context, onData func(agentpb.OpChannel, []byte) error) (*agentpb.OpExit, error) {
	for {
		f, err := o.Next(ctx)
		if err != nil {
			return nil, err
		}
		if d := f.GetData(); d != nil {
			if err := onData(d.GetChannel(), d.GetBytes()); err != nil {
				return nil, err
			}
		} else if e := f.GetExit(); e != nil {
			return e, nil
		}
	}
}

// ReadFileStream reads a whole file over op-stream into w, verifying the
// blake3 digest the machine reports. progress (may be nil) gets bytes done
// and the total (known at the end only: -1 until then).
func (s *Session) ReadFileStream(ctx context.Context, path string, w io.Writer, opts *OpOptions, progress func(done, total int64)) (int64, error) {
	op, _, err := s.StartOp(ctx, &agentpb.OpStart{Op: &agentpb.OpStart_FsRead{FsRead: &agentpb.FsReadRequest{Path: s.path(path)}}}, opts)
	if err != nil {
		return 0, err
	}
	defer op.Close()
	h := blake3.New()
	var n int64
	exit, err := op.Consume(ctx, func(_ agentpb.OpChannel, b []byte) error {
		if _, err := w.Write(b); err != nil {
			return err
		}
		h.Write(b)
		n += int64(len(b))
		if progress != nil {
			progress(n, -1)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if exit.GetFailureCode() != "" {
		return n, fmt.Errorf("control: read %s: %s %v", path, exit.GetFailureCode(), exit.GetFailureDetail())
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != exit.GetDigests()["content"] || uint64(n) != exit.GetTotals()["content"] {
		return n, fmt.Errorf("control: read %s: received %d bytes with blake3 %s, the machine sent %d with %s", path, n, got,
			exit.GetTotals()["content"], exit.GetDigests()["content"])
	}
	if progress != nil {
		progress(n, n)
	}
	return n, nil
}

// ChunkedWriteOptions tune WriteFileStream.
type ChunkedWriteOptions struct {
	ChunkSize int // bytes per WriteChunk; default (and at most) 512 KiB, capped by the transport
	InFlight  int // chunks in flight; default 8
	Mode      uint32
	// ExpectedBaseDigest (blake3 hex of the file being replaced, "absent"
	// for none): the machine renames only if the target still has it.
	ExpectedBaseDigest string
	Progress           func(done, total int64)
}

// MaxWriteChunk is the largest WriteChunk the machine takes.
const MaxWriteChunk = 512 << 10

// DefaultChunksInFlight: 4 × 512 KiB kept the 2-core reference machine
// busiest (8 and more only added contention; see e2e BenchmarkTransfer).
const DefaultChunksInFlight = 4

// WriteFileStream uploads r (size bytes, -1 when unknown; with a size, a
// shorter r is an error and nothing is renamed, and bytes past size are
// not read) over op-stream chunked writes: chunks go to an op-scoped temp
// file on the machine, several in flight, each retried on a transient
// failure (a chunk is idempotent per seq); the last one renames the file
// into place. The machine's blake3 of what it wrote must match ours.
func (s *Session) WriteFileStream(ctx context.Context, path string, r io.Reader, size int64, opts *ChunkedWriteOptions) (int64, error) {
	var o ChunkedWriteOptions
	if opts != nil {
		o = *opts
	}
	if size >= 0 {
		r = io.LimitReader(r, size)
	}
	chunk := o.ChunkSize
	if chunk <= 0 || chunk > MaxWriteChunk {
		chunk = MaxWriteChunk
	}
	chunk = min(chunk, int(s.MaxPayload(ctx))-TransferOverhead)
	if o.InFlight <= 0 {
		o.InFlight = DefaultChunksInFlight
	}
	op, _, err := s.StartOp(ctx, &agentpb.OpStart{Op: &agentpb.OpStart_FsWrite{FsWrite: &agentpb.FsWriteBegin{
		Path: s.path(path), CreateParents: true, Mode: o.Mode, ExpectedBaseDigest: o.ExpectedBaseDigest}}}, nil)
	if err != nil {
		return 0, err
	}
	defer op.Close()

	h := blake3.New()
	sem := make(chan struct{}, o.InFlight)
	// Chunk buffers are reused once their chunk was answered: the ones in
	// flight, the one read ahead and the one being read.
	free := make(chan []byte, o.InFlight+2)
	for range o.InFlight + 2 {
		free <- make([]byte, chunk)
	}
	readChunk := func() ([]byte, error) {
		b := <-free
		m, err := io.ReadFull(r, b)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			err = nil
		}
		return b[:m], err
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	var done int64
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() bool { mu.Lock(); defer mu.Unlock(); return firstErr != nil }
	send := func(wc *agentpb.WriteChunk) {
		defer func() { free <- wc.Bytes[:cap(wc.Bytes)]; <-sem; wg.Done() }()
		if err := op.writeChunk(ctx, wc); err != nil {
			fail(err)
			return
		}
		mu.Lock()
		done += int64(len(wc.Bytes))
		if o.Progress != nil {
			o.Progress(done, size)
		}
		mu.Unlock()
	}
	// Read one chunk ahead so the chunk that ends the file is marked last.
	var off int64
	var seq uint64
	cur, err := readChunk()
	for err == nil && !failed() {
		next, nerr := readChunk()
		if nerr != nil {
			err = nerr
			break
		}
		last := len(next) == 0
		if last && size >= 0 && off+int64(len(cur)) != size {
			err = fmt.Errorf("source ended after %d of %d bytes: %w", off+int64(len(cur)), size, io.ErrUnexpectedEOF)
			break
		}
		seq++
		h.Write(cur)
		wc := &agentpb.WriteChunk{OpId: op.id, Seq: seq, Bytes: cur, Offset: uint64(off), Last: last}
		off += int64(len(cur))
		if last {
			wg.Wait() // every earlier chunk is in: the last one's reply is the verdict
		}
		sem <- struct{}{}
		wg.Add(1)
		if last {
			send(wc)
			break
		}
		go send(wc)
		cur = next
	}
	wg.Wait()
	if err != nil {
		fail(fmt.Errorf("control: write %s: read source: %w", path, err))
	}
	if firstErr != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = op.Cancel(cctx)
		cancel()
		return off, firstErr
	}
	st, err := op.Query(ctx)
	if err != nil {
		return off, err
	}
	exit := st.GetExit()
	if got := hex.EncodeToString(h.Sum(nil)); exit.GetDigests()["content"] != got || exit.GetTotals()["content"] != uint64(off) {
		return off, fmt.Errorf("control: write %s: sent %d bytes with blake3 %s, the machine wrote %d with %s", path, off, got,
			exit.GetTotals()["content"], exit.GetDigests()["content"])
	}
	return off, nil
}

// writeChunk sends one chunk, retrying transient failures with the same
// seq (idempotent on the machine).
func (o *Op) writeChunk(ctx context.Context, wc *agentpb.WriteChunk) error {
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			if serr := backoff.SleepCtx(ctx, RetryBackoff(attempt-1, 0.5)); serr != nil {
				return err
			}
		}
		_, err = o.request(ctx, &agentpb.ControlRequest{RequestId: uuid.NewString(), Epoch: o.s.epoch,
			Op: &agentpb.ControlRequest_WriteChunk{WriteChunk: wc}})
		var ce *Error
		if err == nil || !errors.As(err, &ce) || !ce.Retryable {
			return err
		}
	}
	return err
}
