package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/logthrottle"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Class says how an op is admitted. Light ops (metrics) never wait for a
// slot, so a busy machine still answers probes at once; Inline ops (ping)
// are cheap and non-blocking and run on the transport's delivery goroutine,
// saving a goroutine hop on the liveness path.
type Class int

const (
	Heavy Class = iota
	Light
	Inline
)

// handler is a registered op, with its result field resolved at
// registration so serving needs no descriptor lookups.
type handler struct {
	class  Class
	result protoreflect.FieldDescriptor // the op's ControlResponse result field
	call   func(ctx context.Context, req protoreflect.Message) (protoreflect.Message, error)
}

var (
	requestDesc  = (&agentpb.ControlRequest{}).ProtoReflect().Descriptor()
	responseDesc = (&agentpb.ControlResponse{}).ProtoReflect().Descriptor()
	opOneof      = requestDesc.Oneofs().ByName("op")
	resultOneof  = responseDesc.Oneofs().ByName("result")
)

// agentInitiated ops flow from the agent to the control plane; receiving one
// is a protocol error, not a missing feature.
var agentInitiated = map[protoreflect.Name]bool{"hello": true, "resume": true, "update_may_proceed": true}

// Dispatcher turns an encoded ControlRequest into an encoded ControlResponse.
// It owns every cross-cutting rule of agent.md §4, once: decoding, the epoch
// fence, draining, routing to the handler registered for the op, error
// mapping, panic containment and the reply-size backstop. Handlers know
// nothing of these.
type Dispatcher struct {
	logger *slog.Logger

	// Registration (Handle, OrderBy, SetObserver, SetPause) is sealed when
	// serving starts (Agent.Run, or the first Accept): from then on the
	// handler tables are read without locks, so a late registration would be
	// a data race; it panics instead, like any other wiring mistake.
	regMu    sync.Mutex
	sealed   atomic.Bool
	handlers map[protoreflect.Name]*handler

	heldEpoch atomic.Uint32
	slots     chan struct{}
	active    atomic.Int64

	// The admission gate. Every decision to admit, and the drain flag, are
	// taken under one mutex, so once BeginDrain returns nothing new is
	// admitted and Wait never races an admission (sync.WaitGroup forbids an
	// Add concurrent with Wait).
	gate       sync.Mutex
	draining   bool
	inflight   int           // admitted requests not yet served
	idle       chan struct{} // non-nil while inflight > 0; closed when it drops to 0
	heavy      int           // admitted heavy requests not yet served (waiting or running)
	queueLimit int           // heavy requests that may wait beyond the slots
	busyTotal  atomic.Uint64 // heavy requests refused because the queue was full

	refusalLog logthrottle.Throttle // one line per interval for repeated DRAINING/busy refusals

	drainSeen atomic.Bool // mirror of draining for lock-free readers (heartbeats)

	orderKeys map[protoreflect.Name]func(protoreflect.Message) string
	orderMu   sync.Mutex
	tails     map[string]chan struct{} // last accepted request per order key

	observer Observer          // told about every answered request; nil: none
	paused   func() PauseState // the owner's pause switch, read live; nil: never paused
	limits   *cgroup.Manager   // per-op resource limits; nil: none enforceable
}

// Observer is told about every request the dispatcher answered, refusals
// included, once its reply is built (the owner's audit log, agent/audit).
// ObserveOp runs on the op's goroutine before the reply is sent, so it must
// only copy what it needs and return. req is nil when the request could not
// be decoded; op is the op's label.
type Observer interface {
	ObserveOp(req *agentpb.ControlRequest, resp *agentpb.ControlResponse, op string,
		start time.Time, took time.Duration, bytesIn, bytesOut int)
	// ObservePause is told when the running agent sees the owner pause
	// (until zero: until resumed) or resume the machine.
	ObservePause(paused bool, until time.Time)
}

// OpEndObserver is an Observer that is also told how every op-stream op
// ended (its op_start was answered long before: the exit arrives in frames).
type OpEndObserver interface {
	ObserveOpEnd(opID, kind string, exit *agentpb.OpExit)
}

// opEndObserver is obs's ObserveOpEnd, or nil when obs does not implement it.
func opEndObserver(obs Observer) func(opID, kind string, exit *agentpb.OpExit) {
	if o, ok := obs.(OpEndObserver); ok {
		return o.ObserveOpEnd
	}
	return nil
}

// StorageReporter is an Observer that can fail to keep its records (the
// owner's audit log on a full disk). While it reports a failure, heartbeats
// carry disk_free_bytes 0: the wire has no other field for a full disk.
type StorageReporter interface {
	// StorageFailure is the last write error while records cannot be
	// written, "" while they can.
	StorageFailure() string
}

// Admission defaults.
const (
	DefaultMaxHeavy = 32
	// QueuePerSlot sets the default queue depth: this many waiting heavy ops
	// per slot, enough to ride out a burst without holding unbounded memory.
	QueuePerSlot = 4
)

// NewDispatcher admits at most maxHeavy heavy ops at once (default 32);
// others wait for a slot. Use SetQueueLimit to bound how many may wait.
func NewDispatcher(logger *slog.Logger, maxHeavy int) *Dispatcher {
	if logger == nil {
		logger = slog.Default()
	}
	if maxHeavy <= 0 {
		maxHeavy = DefaultMaxHeavy
	}
	return &Dispatcher{
		logger:     logger,
		handlers:   map[protoreflect.Name]*handler{},
		slots:      make(chan struct{}, maxHeavy),
		queueLimit: QueuePerSlot * maxHeavy,
		orderKeys:  map[protoreflect.Name]func(protoreflect.Message) string{},
		tails:      map[string]chan struct{}{},
	}
}

// SetQueueLimit bounds the heavy ops that may wait for a slot (n <= 0 means
// the default, QueuePerSlot times the slots). Beyond it a heavy op is refused
// at once as busy. Call it before serving.
func (d *Dispatcher) SetQueueLimit(n int) {
	if n <= 0 {
		n = QueuePerSlot * cap(d.slots)
	}
	d.gate.Lock()
	d.queueLimit = n
	d.gate.Unlock()
}

// Handle registers h for the op named op (the ControlRequest oneof field,
// e.g. "fs_read"). Req and Resp must be the op's request type and the
// ControlResponse result type of the same name. A mismatch or a duplicate is
// a programming error and panics at wiring time.
func Handle[Req, Resp proto.Message](d *Dispatcher, op string, class Class, h func(context.Context, Req) (Resp, error)) {
	HandleAs(d, op, op, class, h)
}

// HandleAs is Handle for an op whose ControlResponse result field has
// another name (op_cancel, op_query and op_attach all answer op_status).
func HandleAs[Req, Resp proto.Message](d *Dispatcher, op, result string, class Class, h func(context.Context, Req) (Resp, error)) {
	name := protoreflect.Name(op)
	reqField := opOneof.Fields().ByName(name)
	respField := resultOneof.Fields().ByName(protoreflect.Name(result))
	if reqField == nil || respField == nil {
		panic(fmt.Sprintf("agent: no op %q in ControlRequest/ControlResponse", op))
	}
	var zeroReq Req
	var zeroResp Resp
	if reqField.Message().FullName() != zeroReq.ProtoReflect().Descriptor().FullName() ||
		respField.Message().FullName() != zeroResp.ProtoReflect().Descriptor().FullName() {
		panic(fmt.Sprintf("agent: handler types for op %q do not match the wire schema", op))
	}
	d.regMu.Lock()
	defer d.regMu.Unlock()
	d.mustBeOpenLocked("Handle " + op)
	if _, dup := d.handlers[name]; dup {
		panic(fmt.Sprintf("agent: op %q registered twice", op))
	}
	d.handlers[name] = &handler{class: class, result: respField, call: func(ctx context.Context, m protoreflect.Message) (protoreflect.Message, error) {
		resp, err := h(ctx, m.Interface().(Req))
		if err != nil {
			return nil, err
		}
		if resp.ProtoReflect() == nil || !resp.ProtoReflect().IsValid() {
			resp = resp.ProtoReflect().New().Interface().(Resp)
		}
		return resp.ProtoReflect(), nil
	}}
}

// OrderBy makes requests of op that share key(req) run one at a time in the
// order they were accepted. NATS delivers one client's requests in publish
// order, so a client may pipeline, say, the appends of a chunked upload and
// still have them applied in order.
func OrderBy[Req proto.Message](d *Dispatcher, op string, key func(Req) string) {
	name := protoreflect.Name(op)
	if opOneof.Fields().ByName(name) == nil {
		panic(fmt.Sprintf("agent: no op %q in ControlRequest", op))
	}
	d.regMu.Lock()
	defer d.regMu.Unlock()
	d.mustBeOpenLocked("OrderBy " + op)
	d.orderKeys[name] = func(m protoreflect.Message) string { return op + "\x00" + key(m.Interface().(Req)) }
}

// ErrSealed is what registering on a dispatcher that already serves
// panics with (wrapped, naming the registration).
var ErrSealed = errors.New("agent: dispatcher registration after serving started")

// mustBeOpenLocked panics once the dispatcher is sealed: a registration
// after serving started is a wiring mistake, like a duplicate op.
func (d *Dispatcher) mustBeOpenLocked(what string) {
	if d.sealed.Load() {
		panic(fmt.Errorf("%w: %s", ErrSealed, what))
	}
}

// seal ends registration; from here the tables are read without locks.
// Taking regMu orders every earlier registration before the first read.
func (d *Dispatcher) seal() {
	if d.sealed.Load() {
		return
	}
	d.regMu.Lock()
	d.sealed.Store(true)
	d.regMu.Unlock()
}

// Serves reports whether an op is registered.
func (d *Dispatcher) Serves(op string) bool {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	_, ok := d.handlers[protoreflect.Name(op)]
	return ok
}

// SetObserver makes o see every answered request. Call it before serving;
// after, it panics (ErrSealed).
func (d *Dispatcher) SetObserver(o Observer) {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	d.mustBeOpenLocked("SetObserver")
	d.observer = o
}

// SetPause makes every op but ping and metrics answer CONSENT_REQUIRED
// while paused() says so; it is read on every op. Call it before serving;
// after, it panics (ErrSealed).
func (d *Dispatcher) SetPause(paused func() PauseState) {
	d.regMu.Lock()
	defer d.regMu.Unlock()
	d.mustBeOpenLocked("SetPause")
	d.paused = paused
}

// SetResourceLimits makes exec and git run in per-op cgroup leaves under m
// (ControlRequest.resource_policy and the owner's caps). Call it before
// serving.
func (d *Dispatcher) SetResourceLimits(m *cgroup.Manager) { d.limits = m }

// SetHeldEpoch sets the epoch the control plane assigned this connection;
// requests carrying an older non-zero epoch are fenced. It is never raised
// from request epochs: several sessions with unrelated epochs share a machine.
func (d *Dispatcher) SetHeldEpoch(e uint32) { d.heldEpoch.Store(e) }

// BeginDrain makes every op accepted from now on answer DRAINING; admitted
// ops finish.
func (d *Dispatcher) BeginDrain() {
	d.gate.Lock()
	d.draining = true
	d.drainSeen.Store(true)
	d.gate.Unlock()
}

// Draining reports whether BeginDrain was called.
func (d *Dispatcher) Draining() bool { return d.drainSeen.Load() }

// Active is the number of ops being served now.
func (d *Dispatcher) Active() int { return int(d.active.Load()) }

// QueueStats is a snapshot of heavy-op admission.
type QueueStats struct {
	Running int    // heavy ops holding a slot
	Slots   int    // heavy ops served at once
	Queued  int    // admitted heavy ops waiting for a slot (or for an earlier op on the same path)
	Limit   int    // the most that may wait; beyond it heavy ops are refused busy
	Refused uint64 // heavy ops refused busy since start
}

// Queue reports the heavy-op queue.
func (d *Dispatcher) Queue() QueueStats {
	d.gate.Lock()
	heavy, limit := d.heavy, d.queueLimit
	d.gate.Unlock()
	running := len(d.slots)
	return QueueStats{Running: running, Slots: cap(d.slots), Queued: max(0, heavy-running), Limit: limit, Refused: d.busyTotal.Load()}
}

// Wait blocks until no admitted op is in flight or ctx ends. After
// BeginDrain nothing new is admitted, so a nil return means drained.
func (d *Dispatcher) Wait(ctx context.Context) error {
	d.gate.Lock()
	idle := d.idle
	d.gate.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Request is an accepted ControlRequest waiting to be served.
type Request struct {
	req       *agentpb.ControlRequest // nil when undecodable
	decodeErr error
	field     protoreflect.FieldDescriptor
	h         *handler        // nil when the op is not served
	prev      <-chan struct{} // the previous request with the same order key
	done      chan struct{}
	key       string

	size     int                 // encoded request bytes
	refusal  *agentpb.AgentError // set when the request was not admitted (draining, busy)
	admitted bool                // counted in inflight
	heavy    bool                // counted in the heavy queue
}

// Inline reports whether the request is to be served on the delivery
// goroutine: an Inline op, or a refusal, which is answered at once so a
// flood of refused requests costs no goroutines.
func (r *Request) Inline() bool { return r.refusal != nil || (r.h != nil && r.h.class == Inline) }

// Accept decodes a request, admits it (or decides its refusal) and takes
// its place in the order of its key. Call it on the transport's delivery
// goroutine, in arrival order, and follow every Accept with exactly one
// Serve.
func (d *Dispatcher) Accept(data []byte) *Request {
	d.seal()
	d.active.Add(1)
	r := &Request{req: &agentpb.ControlRequest{}, size: len(data)}
	if err := proto.Unmarshal(data, r.req); err != nil {
		r.req, r.decodeErr = nil, err
	} else if r.field = r.req.ProtoReflect().WhichOneof(opOneof); r.field != nil {
		r.h = d.handlers[r.field.Name()]
	}
	if !d.admit(r) {
		return r
	}
	if r.h == nil {
		return r
	}
	if keyOf, ok := d.orderKeys[r.field.Name()]; ok {
		r.key = keyOf(r.req.ProtoReflect().Get(r.field).Message())
		r.done = make(chan struct{})
		d.orderMu.Lock()
		r.prev = d.tails[r.key]
		d.tails[r.key] = r.done
		d.orderMu.Unlock()
	}
	return r
}

// admit decides, under the gate, whether r is served: nothing is admitted
// once draining, and a heavy op is refused busy when the slots are taken
// and QueueLimit heavy ops already wait. Ping, metrics and the other light
// ops are never refused for busy: they are how a platform sees a busy
// machine is alive.
func (d *Dispatcher) admit(r *Request) bool {
	d.gate.Lock()
	defer d.gate.Unlock()
	if d.draining {
		r.refusal = &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_DRAINING,
			Message: "the agent is draining", Retryable: true}
		return false
	}
	if r.h != nil && r.h.class == Heavy {
		if limit := cap(d.slots) + d.queueLimit; d.heavy >= limit {
			d.busyTotal.Add(1)
			r.refusal = busyError(d.heavy-len(d.slots), d.queueLimit)
			return false
		}
		d.heavy++
		r.heavy = true
	}
	d.inflight++
	if d.inflight == 1 {
		d.idle = make(chan struct{})
	}
	r.admitted = true
	return true
}

// busyError refuses a heavy op when the queue is full. v1 has no BUSY code;
// it is DRAINING (retryable) with a "machine busy" message and detail
// reason=busy, because DRAINING promises exactly what a busy refusal means:
// the op was never started, so any op may be retried. The next-revision
// control plane retries DRAINING for every op with backoff (exec up to 10
// times, others 3; control.md §9), whereas TIMEOUT is retried only once and
// only for read-only ops (a timeout may mean the op ran), and v1 maps it to
// agent_reconnecting, which a busy machine is not.
func busyError(queued, limit int) *agentpb.AgentError {
	return &agentpb.AgentError{
		Code: agentpb.ErrorCode_ERROR_CODE_DRAINING,
		Message: fmt.Sprintf("machine busy: %d operations are already waiting for a free slot (limit %d); retry with backoff",
			queued, limit),
		Retryable: true,
		Detail:    map[string]string{"reason": "busy", "queue_depth": strconv.Itoa(queued), "queue_limit": strconv.Itoa(limit)},
	}
}

// finish returns r's admission when its reply is built.
func (d *Dispatcher) finish(r *Request) {
	d.release(r)
	d.active.Add(-1)
	if !r.admitted {
		return
	}
	d.gate.Lock()
	if r.heavy {
		d.heavy--
	}
	d.inflight--
	if d.inflight == 0 {
		close(d.idle)
		d.idle = nil
	}
	d.gate.Unlock()
}

// release lets the next request with the same order key run.
func (d *Dispatcher) release(r *Request) {
	if r.done == nil {
		return
	}
	d.orderMu.Lock()
	close(r.done)
	if d.tails[r.key] == r.done {
		delete(d.tails, r.key)
	}
	d.orderMu.Unlock()
}

// Dispatch serves one encoded request and returns the encoded reply, which
// never exceeds maxPayload (when > 0). It never panics.
func (d *Dispatcher) Dispatch(ctx context.Context, data []byte, maxPayload int) []byte {
	return d.Serve(ctx, d.Accept(data), maxPayload)
}

// Serve runs an accepted request and returns the encoded reply.
func (d *Dispatcher) Serve(ctx context.Context, r *Request, maxPayload int) []byte {
	defer d.finish(r)

	start := time.Now()
	resp, label := d.serve(ctx, r, maxPayload)
	out, err := proto.Marshal(resp)
	if err != nil { // cannot happen with generated types; answer something decodable
		resp = errorResponse(resp.GetRequestId(), &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_OS, Message: "encode reply: " + err.Error()})
		out, _ = proto.Marshal(resp)
	}
	if maxPayload > 0 && len(out) > maxPayload {
		d.logger.Warn("reply over max payload", "op", label, "encoded_bytes", len(out), "max_payload", maxPayload)
		resp = errorResponse(resp.GetRequestId(), &agentpb.AgentError{
			Code: agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE,
			Message: fmt.Sprintf("reply for op '%s' is %d bytes, over the transport's negotiated max payload of %d bytes; it could not be published",
				label, len(out), maxPayload),
			Detail: map[string]string{"op": label, "encoded_bytes": strconv.Itoa(len(out)), "max_payload": strconv.Itoa(maxPayload)},
		})
		out, _ = proto.Marshal(resp)
	}
	took := time.Since(start)
	d.logReply(ctx, resp, label, took)
	if d.observer != nil {
		d.observer.ObserveOp(r.req, resp, label, start, took, r.size, len(out))
	}
	return out
}

// logReply logs an op at Debug, or at Info when it failed. Refusals come
// in floods (a draining or busy agent), so they are rate-limited per kind:
// one line per interval, counting the lines left out.
func (d *Dispatcher) logReply(ctx context.Context, resp *agentpb.ControlResponse, label string, took time.Duration) {
	e := resp.GetError()
	level := slog.LevelDebug
	if e != nil {
		level = slog.LevelInfo
	}
	if !d.logger.Enabled(ctx, level) {
		return
	}
	attrs := []any{"op", label, "request_id", resp.GetRequestId(), "duration", took, "code", e.GetCode().String()}
	if e.GetCode() == agentpb.ErrorCode_ERROR_CODE_DRAINING { // draining, or busy (detail reason)
		reason := e.GetDetail()["reason"]
		ok, suppressed := d.refusalLog.Allow(reason)
		if !ok {
			return
		}
		attrs = append(attrs, "suppressed", suppressed)
		if reason == "busy" {
			q := d.Queue()
			attrs = append(attrs, "queue_depth", q.Queued, "queue_limit", q.Limit, "refused_busy_total", q.Refused)
		}
	}
	d.logger.Log(ctx, level, "op", attrs...)
}

// serve applies the rules in order and returns the response and op label.
func (d *Dispatcher) serve(ctx context.Context, r *Request, maxPayload int) (*agentpb.ControlResponse, string) {
	if r.req == nil {
		return errorResponse("", &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_PROTOCOL,
			Message: "undecodable ControlRequest: " + r.decodeErr.Error()}), "none"
	}
	req, field := r.req, r.field
	id := req.GetRequestId()
	label := "none"
	if field != nil {
		label = string(field.Name())
	}

	if held := d.heldEpoch.Load(); req.GetEpoch() != 0 && req.GetEpoch() < held {
		return errorResponse(id, &agentpb.AgentError{
			Code:      agentpb.ErrorCode_ERROR_CODE_FENCED,
			Message:   fmt.Sprintf("op epoch %d is older than held epoch %d; re-resolve", req.GetEpoch(), held),
			Retryable: true,
			Detail:    map[string]string{"op_epoch": strconv.Itoa(int(req.GetEpoch())), "held_epoch": strconv.Itoa(int(held))},
		}), label
	}
	if r.refusal != nil {
		return errorResponse(id, r.refusal), label
	}
	if d.drainSeen.Load() { // admitted before the drain began but not started yet: nothing ran
		return errorResponse(id, &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_DRAINING,
			Message: "the agent is draining", Retryable: true}), label
	}
	if field != nil && d.paused != nil && !pauseExempt[field.Name()] {
		if p := d.paused(); p.Paused {
			return errorResponse(id, p.refusal()), label
		}
	}
	if field == nil {
		if num, ok := unknownOp(req); ok {
			return errorResponse(id, &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED,
				Message: fmt.Sprintf("unsupported operation: op field %d is not known to this agent", num),
				Detail:  map[string]string{"op_field": strconv.Itoa(int(num))}}), "none"
		}
		return errorResponse(id, &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_PROTOCOL,
			Message: "ControlRequest carried no op"}), label
	}
	h := r.h
	if h == nil {
		if agentInitiated[field.Name()] {
			return errorResponse(id, &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_PROTOCOL,
				Message: "hello/resume/update_may_proceed are agent-initiated, not inbound ops"}), label
		}
		return errorResponse(id, &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED,
			Message: fmt.Sprintf("unsupported operation: %s is not served by this agent", label)}), label
	}
	// control.md §9: a policy the runner cannot enforce is UNSUPPORTED,
	// never silently ignored (the platform would believe the op contained);
	// an enforceable one (and the owner's caps) go with the op to its leaf.
	ctx, err := d.limits.Bind(ctx, label, req.GetResourcePolicy())
	if err != nil {
		return errorResponse(id, agenterr.ToProto(err)), label
	}

	if r.prev != nil { // wait for the previous request with the same key, before taking a slot
		select {
		case <-r.prev:
		case <-ctx.Done():
			return errorResponse(id, agenterr.ToProto(fmt.Errorf("waiting for an earlier %s on the same path: %w", label, ctx.Err()))), label
		}
	}
	if h.class == Heavy {
		select {
		case d.slots <- struct{}{}:
			defer func() { <-d.slots }()
		case <-ctx.Done():
			return errorResponse(id, agenterr.ToProto(fmt.Errorf("waiting for a free op slot: %w", ctx.Err()))), label
		}
	}
	ctx = opctx.WithRequestID(opctx.WithMaxReply(ctx, maxPayload), id)
	result, err := d.call(ctx, h, req.ProtoReflect().Get(field).Message(), label)
	if err != nil {
		return errorResponse(id, agenterr.ToProto(err)), label
	}
	resp := &agentpb.ControlResponse{RequestId: id}
	resp.ProtoReflect().Set(h.result, protoreflect.ValueOfMessage(result))
	return resp, label
}

// call runs a handler, turning a panic into an OS error so one bad op never
// takes the agent (and the user's other sessions) down.
func (d *Dispatcher) call(ctx context.Context, h *handler, req protoreflect.Message, label string) (res protoreflect.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			d.logger.Error("op handler panicked", "op", label, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			res, err = nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_OS, "internal error serving %s", label)
		}
	}()
	return h.call(ctx, req)
}

// unknownOp reports an op field of a newer protocol revision (an unknown
// field in the op range) that protobuf kept as unknown bytes.
func unknownOp(req *agentpb.ControlRequest) (protowire.Number, bool) {
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		if num >= 10 && typ == protowire.BytesType {
			return num, true
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return 0, false
		}
		b = b[m:]
	}
	return 0, false
}

func errorResponse(id string, e *agentpb.AgentError) *agentpb.ControlResponse {
	return &agentpb.ControlResponse{RequestId: id, Error: e}
}
