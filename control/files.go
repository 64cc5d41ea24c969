package control

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// TransferOptions tunes ReadFileAll and WriteFileAll. A nil *TransferOptions
// means the defaults.
type TransferOptions struct {
	// ChunkSize is the bytes per request; 0 means the transport's max payload
	// minus TransferOverhead (so each message fits).
	ChunkSize int
	// Concurrency is how many ranged reads ReadFileAll keeps in flight; 0
	// means DefaultTransferConcurrency. Writes are appends, so they are
	// sequential.
	Concurrency int
	// Progress, if set, is called after each chunk with the bytes done so far
	// and the total (-1 when unknown). Calls are sequential and done never
	// decreases.
	Progress func(done, total int64)
}

// Transfer defaults.
const (
	// TransferOverhead is the room left in each message for the envelope
	// (request id, path, field tags).
	TransferOverhead = 8 << 10
	// DefaultTransferConcurrency is the default number of reads in flight.
	DefaultTransferConcurrency = 8
)

func (s *Session) transferParams(ctx context.Context, opts *TransferOptions) (chunk, conc int, progress func(int64, int64)) {
	progress = func(int64, int64) {}
	if opts != nil {
		chunk, conc = opts.ChunkSize, opts.Concurrency
		if opts.Progress != nil {
			progress = opts.Progress
		}
	}
	if chunk <= 0 {
		mp := s.MaxPayload(ctx)
		n := mp - TransferOverhead
		if n < mp/2 { // a tiny max payload: still leave room for the envelope
			n = mp / 2
		}
		chunk = int(max(n, 1))
	}
	if conc <= 0 {
		conc = DefaultTransferConcurrency
	}
	return chunk, conc, progress
}

// ReadFileAll streams a file of any size into w. Over op-stream (when the
// machine offers it, see UsesOpStream) it is one fs_read op whose frames
// arrive in order under credit, checked against the machine's blake3
// (ChunkSize and Concurrency do not apply); otherwise ranged fs_read
// requests, several in flight, written to w in order. The total comes from
// a stat (op-stream, only when there is a Progress to tell) or the first
// reply's total_size; a file whose size changes mid-transfer, or a short
// chunk, is an error. It returns the bytes written to w.
func (s *Session) ReadFileAll(ctx context.Context, path string, w io.Writer, opts *TransferOptions) (int64, error) {
	if s.UsesOpStream(ctx) {
		n, err := s.readFileOpStream(ctx, path, w, opts)
		if n > 0 || !opStreamRefused(err) {
			return n, err
		}
	}
	chunk, conc, progress := s.transferParams(ctx, opts)
	first, err := s.readRange(ctx, "readFileAll", path, 0, uint64(chunk))
	if err != nil {
		return 0, err
	}
	total := int64(first.GetTotalSize())
	data := first.GetContent()
	// An agent that ignores the range and sends the whole file is fine.
	if int64(len(data)) != total && int64(len(data)) != min(int64(chunk), total) {
		return 0, fmt.Errorf("selfhosted readFileAll: short read of %s at offset 0: got %d of %d bytes", path, len(data), min(int64(chunk), total))
	}
	if _, err := w.Write(data); err != nil {
		return 0, fmt.Errorf("selfhosted readFileAll: write: %w", err)
	}
	done := int64(len(data))
	progress(done, total)
	if done >= total {
		return done, nil
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	type result struct {
		data []byte
		err  error
	}
	// pending holds one channel per chunk, in file order; its capacity bounds
	// the reads in flight (the one the consumer waits on plus conc-1 queued).
	pending := make(chan chan result, conc-1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(pending)
		for off := done; off < total; off += int64(chunk) {
			ch := make(chan result, 1)
			select {
			case pending <- ch:
			case <-ctx.Done():
				return
			}
			want := min(int64(chunk), total-off)
			wg.Add(1)
			go func(off, want int64) {
				defer wg.Done()
				r, err := s.readRange(ctx, "readFileAll", path, uint64(off), uint64(want))
				switch {
				case err != nil:
				case int64(r.GetTotalSize()) != total:
					err = fmt.Errorf("selfhosted readFileAll: %s changed during the transfer (size %d, now %d)", path, total, r.GetTotalSize())
				case int64(len(r.GetContent())) != want:
					err = fmt.Errorf("selfhosted readFileAll: short read of %s at offset %d: got %d of %d bytes", path, off, len(r.GetContent()), want)
				}
				ch <- result{r.GetContent(), err}
			}(off, want)
		}
	}()

	for ch := range pending {
		var r result
		select {
		case r = <-ch:
		case <-ctx.Done():
			return done, ctx.Err()
		}
		if r.err != nil {
			return done, r.err
		}
		if _, err := w.Write(r.data); err != nil {
			return done, fmt.Errorf("selfhosted readFileAll: write: %w", err)
		}
		done += int64(len(r.data))
		progress(done, total)
	}
	if done != total {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		return done, fmt.Errorf("selfhosted readFileAll: %s: stopped after %d of %d bytes", path, done, total)
	}
	return done, nil
}

// WriteFileAll writes everything r yields to path, in chunks: size is the
// byte count (-1 when unknown; with a size, a shorter r is an error and bytes
// past size are not read).
//
// The destination stays intact until the whole file is on the machine.
// Over op-stream (when the machine offers it, see UsesOpStream) the chunks
// are WriteChunks of one fs_write op, several in flight, landing in an
// op-scoped temp file that the last chunk renames into place once the
// machine's blake3 of it matches (ChunkSize and Concurrency do not apply).
// Otherwise they go to a sibling "<dir>/.<base>.opengeni-part-<random>"
// (the first a truncating write that creates parents, the rest appends, in
// order) that is then moved onto path, replacing it; on failure the part
// file is removed. It returns the bytes written.
func (s *Session) WriteFileAll(ctx context.Context, path string, r io.Reader, size int64, opts *TransferOptions) (int64, error) {
	if s.UsesOpStream(ctx) {
		var progress func(int64, int64)
		if opts != nil {
			progress = opts.Progress
		}
		n, err := s.WriteFileStream(ctx, path, r, size, &ChunkedWriteOptions{Progress: progress})
		if n > 0 || !opStreamRefused(err) { // nothing read from r yet: the v1 ops can still send it
			return n, err
		}
	}
	part, err := partName(path)
	if err != nil {
		return 0, err
	}
	chunk, conc, progress := s.transferParams(ctx, opts)
	if size >= 0 {
		r = io.LimitReader(r, size)
	} else {
		size = -1
	}
	total := size

	var done int64
	fail := func(err error) (int64, error) {
		// Best effort, even when ctx is what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
		defer cancel()
		_ = s.Remove(cctx, part, false)
		return done, err
	}
	// read fills the next chunk; eof reports the source is exhausted.
	read := func(buf []byte) (int, bool, error) {
		n, err := io.ReadFull(r, buf)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, true, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("selfhosted writeFileAll: read source: %w", err)
		}
		return n, false, nil
	}

	// The first chunk creates (or truncates) the part file, with parents.
	buf := make([]byte, chunk)
	n, eof, err := read(buf)
	if err != nil {
		return fail(err)
	}
	parents := true
	if err := s.checkedWrite(ctx, part, buf[:n], &WriteOptions{CreateParents: &parents}); err != nil {
		return fail(err)
	}
	done += int64(n)
	progress(done, total)

	if !eof {
		var werr error
		if pl, ok := s.rpc.(Pipeliner); ok && conc > 1 {
			werr = s.appendPipelined(ctx, pl, part, buf, conc, read, func(n int) { done += int64(n); progress(done, total) })
		} else {
			werr = s.appendSequential(ctx, part, buf, read, func(n int) { done += int64(n); progress(done, total) })
		}
		if werr != nil {
			return fail(werr)
		}
	}
	if size >= 0 && done != size {
		return fail(fmt.Errorf("selfhosted writeFileAll: source ended after %d of %d bytes: %w", done, size, io.ErrUnexpectedEOF))
	}
	if err := s.Move(ctx, part, path, true); err != nil {
		return fail(err)
	}
	return done, nil
}

// readFileOpStream is ReadFileAll over op-stream. Progress gets the total
// from a stat first (-1 if that fails: the transfer itself says).
func (s *Session) readFileOpStream(ctx context.Context, path string, w io.Writer, opts *TransferOptions) (int64, error) {
	if opts == nil || opts.Progress == nil {
		return s.ReadFileStream(ctx, path, w, nil, nil)
	}
	total := int64(-1)
	if st, err := s.Stat(ctx, path); err == nil && st.GetExists() {
		total = int64(st.GetEntry().GetSize())
	}
	return s.ReadFileStream(ctx, path, w, nil, func(done, end int64) {
		if end >= 0 {
			total = end
		}
		opts.Progress(done, total)
	})
}

// checkedWrite writes content and verifies the agent wrote all of it.
func (s *Session) checkedWrite(ctx context.Context, path string, content []byte, opts *WriteOptions) error {
	written, err := s.writeFile(ctx, "writeFileAll", path, content, opts)
	if err != nil {
		return err
	}
	if written != uint64(len(content)) {
		return fmt.Errorf("selfhosted writeFileAll: short write to %s: %d of %d bytes", path, written, len(content))
	}
	return nil
}

type chunkReader func(buf []byte) (n int, eof bool, err error)

// appendSequential appends chunk after chunk, one round trip each.
func (s *Session) appendSequential(ctx context.Context, part string, buf []byte, read chunkReader, wrote func(int)) error {
	for {
		n, eof, err := read(buf)
		if err != nil {
			return err
		}
		if n > 0 {
			if err := s.checkedWrite(ctx, part, buf[:n], &WriteOptions{Append: true}); err != nil {
				return err
			}
			wrote(n)
		}
		if eof {
			return nil
		}
	}
}

// appendPipelined keeps up to window appends in flight. They are published
// in order on one connection and the agent applies writes to one path in
// arrival order, so the file is assembled in order; replies are checked in
// order too.
func (s *Session) appendPipelined(ctx context.Context, pl Pipeliner, part string, first []byte, window int, read chunkReader, wrote func(int)) error {
	subj, _, err := s.route(ctx)
	if err != nil {
		return err
	}
	p, err := pl.Pipeline(ctx, subj)
	if err != nil {
		return s.appendSequential(ctx, part, first, read, wrote)
	}
	defer p.Close()
	type inflight struct {
		f *Pending
		n int
	}
	var queue []inflight
	buf := first // Send encodes a copy, so one buffer serves every chunk
	wait := func() error {
		head := queue[0]
		queue = queue[1:]
		return s.checkAppend(ctx, head.f, part, head.n, wrote)
	}
	// drain collects the replies still in flight after a failure; they no
	// longer count, the part file is removed.
	drain := func() {
		for _, in := range queue {
			_, _ = in.f.Wait(ctx, s.timeout)
		}
		queue = nil
	}

	for {
		if len(queue) == window {
			if err := wait(); err != nil {
				drain()
				return err
			}
		}
		n, eof, err := read(buf)
		if err != nil {
			drain()
			return err
		}
		if n > 0 {
			req := s.newRequest(func(r *agentpb.ControlRequest) {
				r.Op = &agentpb.ControlRequest_FsWrite{FsWrite: &agentpb.FsWriteRequest{Path: s.path(part), Content: buf[:n], Append: true}}
			})
			f, err := p.Send(req)
			if err != nil {
				drain()
				return err
			}
			queue = append(queue, inflight{f, n})
		}
		if eof {
			break
		}
	}
	for len(queue) > 0 {
		if err := wait(); err != nil {
			drain()
			return err
		}
	}
	return nil
}

// checkAppend waits for one pipelined append and counts it when it wrote
// everything.
func (s *Session) checkAppend(ctx context.Context, f *Pending, part string, n int, wrote func(int)) error {
	resp, err := f.Wait(ctx, s.timeout)
	if err != nil {
		return err
	}
	got, err := resultAs[*agentpb.ControlResponse_FsWrite]("writeFileAll", resp, bytesWritten)
	if err != nil {
		return err
	}
	if got != uint64(n) {
		return fmt.Errorf("selfhosted writeFileAll: short write to %s: %d of %d bytes", part, got, n)
	}
	wrote(n)
	return nil
}

// partName is the sibling temp name of a chunked write. Both separators are
// honored so Windows paths keep their part file beside the target.
func partName(p string) (string, error) {
	i := strings.LastIndexAny(p, `/\`)
	dir, base := p[:i+1], p[i+1:]
	if base == "" || p == VirtualRoot || base == "." || base == ".." {
		return "", fmt.Errorf("selfhosted writeFileAll: %q is not a file path", p)
	}
	return dir + "." + base + ".opengeni-part-" + strconv.FormatUint(rand.Uint64(), 36), nil
}
