package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opengeni/opengeni-agent/internal/logthrottle"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Defaults: 10 MiB per file, five files (the live one and four rotated).
const (
	DefaultMaxFileBytes = 10 << 20
	DefaultMaxFiles     = 5
	// DirName is the log's directory under the agent's config (state) dir.
	DirName = "audit"
	// maxPending bounds the records held in memory while the disk refuses
	// writes; beyond it the oldest are counted as lost (and the loss is
	// recorded once the disk takes writes again).
	maxPending = 1 << 18
	retryEvery = time.Second
	// batchDelay gathers the records of a burst into one write, and keeps
	// the encoding and the write off the moment an op sends its reply.
	batchDelay = 50 * time.Millisecond
)

// Options configure a Log.
type Options struct {
	Dir          string // required: the directory holding audit.jsonl and its rotations
	MaxFileBytes int64  // rotate when the live file would grow past this; default 10 MiB
	MaxFiles     int    // files kept, the live one included; default 5
	// RecordInput records typed text (pty_write data, desktop key text).
	// Off by default: the owner turns it on locally.
	RecordInput bool
	Logger      *slog.Logger
}

// Log appends records to the audit files from one writer goroutine. Append
// never blocks on the disk: records queue in memory (bounded) and are
// written in batches; a failing disk is retried every second, logged, and
// reported by Status, and no record is dropped while the queue has room.
type Log struct {
	opts   Options
	logger *slog.Logger

	mu       sync.Mutex
	pending  []Record
	lost     uint64        // records dropped because the queue was full (written as a note later)
	queued   uint64        // records ever queued
	written  uint64        // records ever written (or counted lost)
	progress chan struct{} // closed and replaced whenever written advances
	wake     chan struct{}
	flushNow chan struct{} // skip the batch delay (Flush, Close)
	closing  chan struct{}
	done     chan struct{}
	closed   bool

	failing atomic.Pointer[string] // the last write error while the disk refuses writes
	errLog  logthrottle.Throttle

	// owned by the writer goroutine
	f    *os.File
	size int64
}

// Open opens (creating, mode 0700/0600) the log in opts.Dir and starts its
// writer. Records appended before a restart stay; new ones follow them.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("audit: no directory")
	}
	if opts.MaxFileBytes <= 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	if opts.MaxFiles <= 0 {
		opts.MaxFiles = DefaultMaxFiles
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{
		opts: opts, logger: opts.Logger.With("component", "audit"),
		progress: make(chan struct{}), wake: make(chan struct{}, 1), flushNow: make(chan struct{}, 1),
		closing: make(chan struct{}), done: make(chan struct{}),
		errLog: logthrottle.Throttle{Interval: time.Minute},
	}
	if err := l.openLive(); err != nil {
		return nil, err
	}
	go l.run()
	return l, nil
}

// Dir is the log's directory.
func (l *Log) Dir() string { return l.opts.Dir }

// LivePath is the file being appended to.
func LivePath(dir string) string { return filepath.Join(dir, "audit.jsonl") }

// rotatedPath is the n-th older file (1 is the newest rotated one).
func rotatedPath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("audit.%d.jsonl", n))
}

func (l *Log) openLive() error {
	f, err := os.OpenFile(LivePath(l.opts.Dir), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	_ = f.Chmod(0o600) // a file from an older build, or copied in, is made private too
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("audit: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// Append queues r. It never waits for the disk.
func (l *Log) Append(r Record) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	if len(l.pending) >= maxPending {
		l.pending = l.pending[1:]
		l.lost++
		l.written++
	}
	l.pending = append(l.pending, r)
	l.queued++
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// Flush waits until every record appended before the call is on disk (or
// counted lost), or ctx ends.
func (l *Log) Flush(ctx context.Context) error {
	l.mu.Lock()
	target := l.queued
	l.mu.Unlock()
	select {
	case l.flushNow <- struct{}{}:
	default:
	}
	for {
		l.mu.Lock()
		done, progress := l.written >= target, l.progress
		l.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Status reports a disk that refuses writes: "" while writes succeed.
func (l *Log) Status() string {
	if p := l.failing.Load(); p != nil {
		return *p
	}
	return ""
}

// Close writes what is queued (up to ctx) and closes the file.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.mu.Unlock()
	err := l.Flush(ctx)
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.closing)
	<-l.done
	return err
}

func (l *Log) run() {
	defer close(l.done)
	defer func() {
		if l.f != nil {
			_ = l.f.Sync()
			_ = l.f.Close()
		}
	}()
	var retry <-chan time.Time
	batch := time.NewTimer(batchDelay)
	batch.Stop()
	for {
		select {
		case <-l.wake:
			batch.Reset(batchDelay)
			select {
			case <-batch.C:
			case <-l.flushNow:
				batch.Stop()
			case <-l.closing:
				return
			}
		case <-l.flushNow:
		case <-retry:
		case <-l.closing:
			return
		}
		retry = nil
		if err := l.writePending(); err != nil {
			retry = time.After(retryEvery)
		}
	}
}

// writePending writes the queued records in one batch. On a write error
// the records not yet written stay queued, in order, for the retry.
func (l *Log) writePending() error {
	l.mu.Lock()
	batch, lost := l.pending, l.lost
	l.pending, l.lost = nil, 0
	l.mu.Unlock()
	if lost > 0 {
		batch = append([]Record{{Time: time.Now().UTC(), Event: "audit",
			Note: fmt.Sprintf("%d records were lost while the disk refused writes", lost)}}, batch...)
	}
	n, err := l.write(batch)
	wrote := n
	if lost > 0 && n > 0 {
		wrote-- // the note is not a queued record
	}
	l.mu.Lock()
	if err != nil {
		rest := batch[n:]
		if lost > 0 && n == 0 {
			rest = rest[1:]
			l.lost += lost
		}
		l.pending = append(rest, l.pending...)
	}
	if wrote > 0 {
		l.written += uint64(wrote)
		close(l.progress)
		l.progress = make(chan struct{})
	}
	l.mu.Unlock()
	if err != nil {
		msg := err.Error()
		l.failing.Store(&msg)
		if ok, suppressed := l.errLog.Allow("write"); ok {
			l.logger.Error("audit log: cannot write (is the disk full?); records are kept in memory and retried every second",
				"err", err, "dir", l.opts.Dir, "suppressed", suppressed)
		}
		return err
	}
	if l.failing.Swap(nil) != nil {
		l.logger.Info("audit log: writing again", "dir", l.opts.Dir)
	}
	return nil
}

// write appends records, rotating before a line would take the live file
// past MaxFileBytes. It returns how many records were written.
func (l *Log) write(batch []Record) (int, error) {
	var buf bytes.Buffer
	start := 0 // first record in buf
	flush := func(upTo int) (int, error) {
		if buf.Len() == 0 {
			return upTo, nil
		}
		if l.f == nil {
			if err := l.openLive(); err != nil {
				return start, err
			}
		}
		n, err := l.f.Write(buf.Bytes())
		l.size += int64(n)
		if err != nil {
			// A partial line would corrupt the next one: end it, so only
			// the torn record is unreadable; it is written again.
			if n > 0 {
				_, _ = l.f.Write([]byte("\n"))
			}
			// Reopen on the retry: the file may have been replaced meanwhile.
			_ = l.f.Close()
			l.f = nil
			return start, err
		}
		buf.Reset()
		return upTo, nil
	}
	for i, r := range batch {
		if r.Args != nil && len(r.Args.Argv) > 0 {
			a := *r.Args
			a.Argv = redactArgv(a.Argv)
			r.Args = &a
		}
		line, err := json.Marshal(r)
		if err != nil { // cannot happen with these types; keep the op, say so
			line, _ = json.Marshal(Record{Time: r.Time, Event: "audit", Op: r.Op, RequestID: r.RequestID, Note: "unencodable record: " + err.Error()})
		}
		line = append(line, '\n')
		if l.size+int64(buf.Len()+len(line)) > l.opts.MaxFileBytes && l.size+int64(buf.Len()) > 0 {
			n, err := flush(i)
			if err != nil {
				return n, err
			}
			start = i
			if err := l.rotate(); err != nil {
				return start, err
			}
		}
		buf.Write(line)
	}
	return flush(len(batch))
}

// rotate shifts audit.jsonl → audit.1.jsonl → … and drops the oldest.
func (l *Log) rotate() error {
	if l.f != nil {
		_ = l.f.Sync()
		_ = l.f.Close()
		l.f = nil
	}
	dir, n := l.opts.Dir, l.opts.MaxFiles
	if n > 1 {
		_ = os.Remove(rotatedPath(dir, n-1))
		for i := n - 2; i >= 1; i-- {
			if err := os.Rename(rotatedPath(dir, i), rotatedPath(dir, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("audit: rotate: %w", err)
			}
		}
		if err := os.Rename(LivePath(dir), rotatedPath(dir, 1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("audit: rotate: %w", err)
		}
	} else if err := os.Truncate(LivePath(dir), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	return l.openLive()
}

// Recorder records the ops of one connection. It satisfies the agent's
// op observer.
type Recorder struct {
	log  *Log
	conn Connection
}

// For returns the recorder of connection c.
func (l *Log) For(c Connection) *Recorder { return &Recorder{log: l, conn: c} }

// ObserveOp records one answered op. It runs on the op's goroutine, so it
// only copies the key arguments out and queues the record.
func (r *Recorder) ObserveOp(req *agentpb.ControlRequest, resp *agentpb.ControlResponse, op string,
	start time.Time, took time.Duration, bytesIn, bytesOut int) {
	r.log.Append(opRecord(r.conn, r.log.opts.RecordInput, req, resp, op, start, took, bytesIn, bytesOut))
}

// ObserveOpEnd records how an op-stream op ended: its op_start record was
// written when the op was accepted, long before. Op "op_end", the op id as
// request id, what it ran in Args.Starts, the exit (code, timed out,
// cancelled), the failure code as Code, and the bytes it produced.
func (r *Recorder) ObserveOpEnd(opID, kind string, exit *agentpb.OpExit) {
	rec := Record{Time: time.Now().UTC(), Event: "op",
		Connection: r.conn.ID, Workspace: r.conn.Workspace, Agent: r.conn.Agent, Platform: r.conn.Platform,
		RequestID: opID, Op: "op_end", Code: "OK", DurationMs: float64(exit.GetDurationMs()),
		Args: &Args{Starts: kind, ExitCode: ptr(exit.GetExitCode()), TimedOut: exit.GetTimedOut(), Cancelled: exit.GetCancelled()}}
	if fc := exit.GetFailureCode(); fc != "" {
		rec.Code = fc
	}
	for _, n := range exit.GetTotals() {
		rec.BytesOut += int(n)
	}
	r.log.Append(rec)
}

// StorageFailure reports the log's disk refusing writes ("" while it takes
// them); the agent's heartbeats pass it on (agent.StorageReporter).
func (r *Recorder) StorageFailure() string { return r.log.Status() }

// ObservePause records that the running agent saw the owner pause
// (until: zero for "until resumed") or resume this machine.
func (r *Recorder) ObservePause(paused bool, until time.Time) {
	rec := Record{Time: time.Now().UTC(), Event: "resume",
		Connection: r.conn.ID, Workspace: r.conn.Workspace, Agent: r.conn.Agent, Platform: r.conn.Platform}
	if paused {
		rec.Event = "pause"
		if !until.IsZero() {
			u := until.UTC()
			rec.Until = &u
		}
	}
	r.log.Append(rec)
}
