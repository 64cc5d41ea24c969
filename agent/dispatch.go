package agent

import (
	"context"
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

	"github.com/opengeni/opengeni-agent/agent/agenterr"
	"github.com/opengeni/opengeni-agent/agent/opctx"
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
	logger   *slog.Logger
	handlers map[protoreflect.Name]*handler

	heldEpoch atomic.Uint32
	draining  atomic.Bool
	slots     chan struct{}
	inflight  sync.WaitGroup
	active    atomic.Int64

	orderKeys map[protoreflect.Name]func(protoreflect.Message) string
	orderMu   sync.Mutex
	tails     map[string]chan struct{} // last accepted request per order key
}

// NewDispatcher admits at most maxHeavy heavy ops at once (others wait).
func NewDispatcher(logger *slog.Logger, maxHeavy int) *Dispatcher {
	if logger == nil {
		logger = slog.Default()
	}
	if maxHeavy <= 0 {
		maxHeavy = 32
	}
	return &Dispatcher{
		logger:    logger,
		handlers:  map[protoreflect.Name]*handler{},
		slots:     make(chan struct{}, maxHeavy),
		orderKeys: map[protoreflect.Name]func(protoreflect.Message) string{},
		tails:     map[string]chan struct{}{},
	}
}

// Handle registers h for the op named op (the ControlRequest oneof field,
// e.g. "fs_read"). Req and Resp must be the op's request type and the
// ControlResponse result type of the same name. A mismatch or a duplicate is
// a programming error and panics at wiring time.
func Handle[Req, Resp proto.Message](d *Dispatcher, op string, class Class, h func(context.Context, Req) (Resp, error)) {
	name := protoreflect.Name(op)
	reqField := opOneof.Fields().ByName(name)
	respField := resultOneof.Fields().ByName(name)
	if reqField == nil || respField == nil {
		panic(fmt.Sprintf("agent: no op %q in ControlRequest/ControlResponse", op))
	}
	var zeroReq Req
	var zeroResp Resp
	if reqField.Message().FullName() != zeroReq.ProtoReflect().Descriptor().FullName() ||
		respField.Message().FullName() != zeroResp.ProtoReflect().Descriptor().FullName() {
		panic(fmt.Sprintf("agent: handler types for op %q do not match the wire schema", op))
	}
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
	d.orderKeys[name] = func(m protoreflect.Message) string { return op + "\x00" + key(m.Interface().(Req)) }
}

// Serves reports whether an op is registered.
func (d *Dispatcher) Serves(op string) bool {
	_, ok := d.handlers[protoreflect.Name(op)]
	return ok
}

// SetHeldEpoch sets the epoch the control plane assigned this connection;
// requests carrying an older non-zero epoch are fenced. It is never raised
// from request epochs: several sessions with unrelated epochs share a machine.
func (d *Dispatcher) SetHeldEpoch(e uint32) { d.heldEpoch.Store(e) }

// BeginDrain makes every new op answer DRAINING; in-flight ops finish.
func (d *Dispatcher) BeginDrain() { d.draining.Store(true) }

// Draining reports whether BeginDrain was called.
func (d *Dispatcher) Draining() bool { return d.draining.Load() }

// Active is the number of ops being served now.
func (d *Dispatcher) Active() int { return int(d.active.Load()) }

// Wait blocks until in-flight ops finished or ctx ends.
func (d *Dispatcher) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { d.inflight.Wait(); close(done) }()
	select {
	case <-done:
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
}

// Inline reports whether the request is for an Inline op, to be served on
// the delivery goroutine.
func (r *Request) Inline() bool { return r.h != nil && r.h.class == Inline }

// Accept decodes a request and takes its place in the order of its key.
// Call it on the transport's delivery goroutine, in arrival order, and
// follow every Accept with exactly one Serve.
func (d *Dispatcher) Accept(data []byte) *Request {
	d.inflight.Add(1)
	d.active.Add(1)
	r := &Request{req: &agentpb.ControlRequest{}}
	if err := proto.Unmarshal(data, r.req); err != nil {
		r.req, r.decodeErr = nil, err
		return r
	}
	r.field = r.req.ProtoReflect().WhichOneof(opOneof)
	if r.field == nil {
		return r
	}
	r.h = d.handlers[r.field.Name()]
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
	defer func() { d.release(r); d.active.Add(-1); d.inflight.Done() }()

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
	level := slog.LevelDebug
	if resp.GetError() != nil {
		level = slog.LevelInfo
	}
	if d.logger.Enabled(ctx, level) {
		d.logger.Log(ctx, level, "op", "op", label, "request_id", resp.GetRequestId(),
			"duration", time.Since(start), "code", resp.GetError().GetCode().String())
	}
	return out
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
	if d.draining.Load() {
		return errorResponse(id, &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_DRAINING,
			Message: "the agent is draining", Retryable: true}), label
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
	ctx = opctx.WithMaxReply(ctx, maxPayload)
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
