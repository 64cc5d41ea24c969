// Package opstream serves op-stream v1.1 (agent.md §9, control.md §9): an
// op (exec, fs_read, a chunked fs_write) is started by OpStart, keyed by
// its op id (the request_id), and runs on its own, detached from any
// connection. Its output goes out as OpFrames (data ≤ 128 KiB, progress
// every 5 s, exit with blake3 digests and totals) on the op subject,
// published fire-and-forget on the bulk connection. Frames are retained
// until the consumer acks them, so a consumer that lost frames (a dropped
// connection, a restarted server) reattaches from the first seq it lacks
// and gets exactly those. The consumer's absolute credit bounds what is
// produced: a command whose consumer is slow or gone blocks on its pipe;
// no byte is ever dropped. Completed ops are kept, bounded, so a late
// consumer learns how they ended; beyond the bound they are reported lost
// (EVICTED), and an op this process never knew is lost because the agent
// restarted (AGENT_RESTARTED).
package opstream

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/exec"
	"github.com/opengeni/opengeni-agent/agent/fs"
	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Limits of the protocol and defaults of this agent.
const (
	MaxFrameData     = 128 << 10 // data bytes per OpFrame
	MaxChunk         = 512 << 10 // bytes per WriteChunk
	DefaultWindow    = 4 << 20   // credit when OpStart/OpAttach give none
	MaxWindow        = 8 << 20   // the most unacked data one op may hold
	ProgressInterval = 5 * time.Second
	// DefaultMaxCompleted completed ops are kept for late consumers, holding
	// at most DefaultCompletedRetain unacked bytes between them.
	DefaultMaxCompleted    = 128
	DefaultCompletedRetain = 32 << 20
	maxTombstones          = 4096
)

// Options configure a Service.
type Options struct {
	Exec  *exec.Service
	Files *fs.Service
	// Publish sends one encoded frame (fire-and-forget, the bulk connection).
	Publish func(subject string, data []byte) error
	// Subject is the op subject of an op id (….connection.<inst>.op.<id>).
	Subject func(opID string) string

	MaxCompleted     int           // default DefaultMaxCompleted
	CompletedRetain  uint64        // default DefaultCompletedRetain
	ProgressInterval time.Duration // default ProgressInterval
	Logger           *slog.Logger
	// OnEnd, when set, is told once of every op that ends, with its exit
	// (the owner's audit log records how a streamed op ended). It runs on
	// the op's goroutine and must not block.
	OnEnd func(opID, kind string, exit *agentpb.OpExit)
}

// Service holds every op of one agent process.
type Service struct {
	opts   Options
	log    *slog.Logger
	ctx    context.Context
	stop   context.CancelCauseFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	mu        sync.Mutex
	ops       map[string]*op
	done      []*op // completed, oldest first
	tombs     map[string]agentpb.OpLostReason
	tombOrder []string

	dropped        atomic.Uint64 // frames the bulk connection refused (retained; a reattach replays them)
	evictedUnacked atomic.Uint64 // completed ops evicted with frames never acked
}

// New returns a Service.
func New(opts Options) *Service {
	if opts.MaxCompleted <= 0 {
		opts.MaxCompleted = DefaultMaxCompleted
	}
	if opts.CompletedRetain == 0 {
		opts.CompletedRetain = DefaultCompletedRetain
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = ProgressInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, stop := context.WithCancelCause(context.Background())
	return &Service{opts: opts, log: opts.Logger.With("component", "opstream"), ctx: ctx, stop: stop,
		ops: map[string]*op{}, tombs: map[string]agentpb.OpLostReason{}}
}

// Close kills every running op (agent stopping) and waits for them.
func (s *Service) Close() {
	s.closed.Store(true)
	s.stop(errStopping)
	s.wg.Wait()
}

// Telemetry is what heartbeats report.
type Telemetry struct {
	Live, Dropped, EvictedUnacked uint64
}

// Telemetry reports running ops and the frame counters.
func (s *Service) Telemetry() Telemetry {
	s.mu.Lock()
	live := 0
	for _, o := range s.ops {
		if o.status().State == agentpb.OpState_OP_STATE_RUNNING {
			live++
		}
	}
	s.mu.Unlock()
	return Telemetry{Live: uint64(live), Dropped: s.dropped.Load(), EvictedUnacked: s.evictedUnacked.Load()}
}

func (s *Service) publish(o *op, enc []byte) {
	if err := s.opts.Publish(s.opts.Subject(o.id), enc); err != nil {
		// Kept in the log: the consumer sees the gap and reattaches.
		if s.dropped.Add(1) == 1 {
			s.log.Warn("op frame not published; kept for replay", "op_id", o.id, "err", err)
		}
	}
}

// Start serves OpStart: the op id is the request_id. A start of an op id
// already known attaches to it (replaying what is retained) and runs
// nothing.
func (s *Service) Start(ctx context.Context, req *agentpb.OpStart) (*agentpb.OpStarted, error) {
	id := opctx.RequestID(ctx)
	if !subject.ValidToken(id) {
		return nil, agenterr.Invalid("op_start: the request_id %q cannot be an op id (a subject token: no '.', '*', '>' or spaces, at most 128 bytes)", id)
	}
	if s.closed.Load() {
		return nil, &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_DRAINING, Message: "the agent is stopping", Retryable: true}
	}
	window := windowOf(req.GetWindowBytes())
	s.mu.Lock()
	if o, ok := s.ops[id]; ok {
		s.mu.Unlock()
		st := o.attach(0, 0, window)
		return &agentpb.OpStarted{Accepted: true, Status: st}, nil
	}
	if reason, ok := s.tombs[id]; ok {
		s.mu.Unlock()
		return &agentpb.OpStarted{Accepted: false, Status: lost(id, reason)}, nil
	}
	octx, cancel := context.WithCancelCause(s.ctx)
	if d := req.GetDeadlineMs(); d > 0 {
		var stop context.CancelFunc
		octx, stop = context.WithDeadlineCause(octx, time.UnixMilli(d), errDeadline)
		prev := cancel
		cancel = func(err error) { stop(); prev(err) }
	}
	o := &op{id: id, svc: s, ctx: octx, cancel: cancel, changed: make(chan struct{}), state: agentpb.OpState_OP_STATE_RUNNING,
		nextSeq: 1, credit: window, window: window, started: time.Now()}
	var run func()
	var err error
	switch body := req.GetOp().(type) {
	case *agentpb.OpStart_Exec:
		o.kind = "exec"
		run, err = s.startExec(o, body.Exec)
	case *agentpb.OpStart_FsRead:
		o.kind = "fs_read"
		run, err = s.startRead(o, body.FsRead)
	case *agentpb.OpStart_FsWrite:
		o.kind = "fs_write"
		err = s.startWrite(o, body.FsWrite)
	default:
		err = agenterr.Invalid("op_start carries no op")
	}
	if err != nil {
		s.mu.Unlock()
		cancel(err)
		return nil, err
	}
	s.ops[id] = o
	s.mu.Unlock()
	if run != nil {
		s.wg.Add(2)
		go func() { defer s.wg.Done(); run() }()
		go func() { defer s.wg.Done(); o.progress(s.opts.ProgressInterval) }()
	}
	return &agentpb.OpStarted{Accepted: true, Status: o.status()}, nil
}

func windowOf(w uint64) uint64 {
	if w == 0 {
		return DefaultWindow
	}
	return min(w, MaxWindow)
}

func lost(id string, reason agentpb.OpLostReason) *agentpb.OpStatus {
	return &agentpb.OpStatus{OpId: id, State: agentpb.OpState_OP_STATE_LOST, LostReason: reason}
}

// find returns the op, or its lost status.
func (s *Service) find(id string) (*op, *agentpb.OpStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.ops[id]; ok {
		return o, nil
	}
	if reason, ok := s.tombs[id]; ok {
		return nil, lost(id, reason)
	}
	// Ops are ids this process was started with; one it never saw ran in an
	// earlier agent process.
	return nil, lost(id, agentpb.OpLostReason_OP_LOST_REASON_AGENT_RESTARTED)
}

// Cancel serves OpCancel: the op's process tree is killed; its exit frame
// says cancelled. Cancelling an ended op changes nothing.
func (s *Service) Cancel(_ context.Context, req *agentpb.OpCancel) (*agentpb.OpStatus, error) {
	o, st := s.find(req.GetOpId())
	if o == nil {
		return st, nil
	}
	o.cancel(errCancelled)
	if o.write != nil {
		o.write.abort(o)
	}
	return o.status(), nil
}

// Query serves OpQuery.
func (s *Service) Query(_ context.Context, req *agentpb.OpQuery) (*agentpb.OpStatus, error) {
	o, st := s.find(req.GetOpId())
	if o == nil {
		return st, nil
	}
	return o.status(), nil
}

// Attach serves OpAttach: the consumer has every frame before from_seq;
// the rest retained is published again at once, and credit is its data
// offset plus the window. An attach of an older generation than the op has
// seen is refused (FENCED): a newer consumer took over.
func (s *Service) Attach(_ context.Context, req *agentpb.OpAttach) (*agentpb.OpStatus, error) {
	o, st := s.find(req.GetOpId())
	if o == nil {
		return st, nil
	}
	o.mu.Lock()
	stale := req.GetAttachGeneration() < o.gen
	cur, acked := o.gen, o.ackedSeq
	o.mu.Unlock()
	if stale {
		return nil, &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_FENCED, Retryable: false,
			Message: fmt.Sprintf("op %s: attach generation %d is older than %d", req.GetOpId(), req.GetAttachGeneration(), cur)}
	}
	if from := req.GetFromSeq(); from > 0 && from <= acked {
		// Those frames were acked and dropped: a replay could never close
		// the consumer's gap.
		return nil, &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_OS,
			Message: fmt.Sprintf("op %s: frames up to seq %d were acked and are gone; attach from %d or later", req.GetOpId(), acked, acked+1),
			Detail:  map[string]string{"reason": "acked", "acked_seq": strconv.FormatUint(acked, 10)}}
	}
	return o.attach(req.GetFromSeq(), req.GetAttachGeneration(), windowOf(req.GetWindowBytes())), nil
}

// attach replays retained frames from fromSeq (0: all retained).
func (o *op) attach(fromSeq, gen, window uint64) *agentpb.OpStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.gen = max(o.gen, gen)
	o.window = window
	if fromSeq > 0 {
		o.ackLocked(fromSeq - 1)
	}
	o.credit = max(o.credit, o.acked+window)
	for _, f := range o.frames {
		o.svc.publish(o, f.enc)
	}
	o.signal()
	return &agentpb.OpStatus{OpId: o.id, State: o.state, NextSeq: o.nextSeq, Exit: o.exit}
}

// Ack applies an OpAck from the ack subject (raw, not wrapped). Acks of an
// unknown op or an older attach generation are ignored.
func (s *Service) Ack(data []byte) {
	var ack agentpb.OpAck
	if err := proto.Unmarshal(data, &ack); err != nil {
		s.log.Debug("undecodable op ack", "err", err)
		return
	}
	s.mu.Lock()
	o := s.ops[ack.GetOpId()]
	s.mu.Unlock()
	if o == nil {
		return
	}
	o.mu.Lock()
	if ack.GetAttachGeneration() < o.gen {
		o.mu.Unlock()
		return
	}
	o.ackLocked(ack.GetAckedSeq())
	o.credit = max(o.credit, ack.GetCreditBytes())
	if ack.GetFinal() && o.state == agentpb.OpState_OP_STATE_COMPLETE {
		o.ackLocked(o.nextSeq)
		o.finished = true
	}
	o.signal()
	o.mu.Unlock()
	s.trim()
}

// completed puts an ended op in the bounded completed store.
func (s *Service) completed(o *op) {
	s.mu.Lock()
	s.done = append(s.done, o)
	s.mu.Unlock()
	s.trim()
}

// trim evicts the oldest completed ops beyond the count bound or the
// retained-bytes bound; they are remembered as lost (EVICTED).
func (s *Service) trim() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var bytes uint64
	for _, o := range s.done {
		o.mu.Lock()
		bytes += o.retained
		o.mu.Unlock()
	}
	for len(s.done) > 0 && (len(s.done) > s.opts.MaxCompleted || bytes > s.opts.CompletedRetain) {
		o := s.done[0]
		s.done = s.done[1:]
		o.mu.Lock()
		bytes -= o.retained
		if len(o.frames) > 0 && !o.finished {
			s.evictedUnacked.Add(1)
		}
		o.ackLocked(o.nextSeq)
		o.mu.Unlock()
		delete(s.ops, o.id)
		s.tombs[o.id] = agentpb.OpLostReason_OP_LOST_REASON_EVICTED
		s.tombOrder = append(s.tombOrder, o.id)
		if len(s.tombOrder) > maxTombstones {
			delete(s.tombs, s.tombOrder[0])
			s.tombOrder = s.tombOrder[1:]
		}
	}
}
