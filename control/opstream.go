package control

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Op-stream v1.1 (control.md §9): an op (exec, fs_read, chunked fs_write)
// started with OpStart on the machine's connection instance, whose frames
// arrive on agent.<ws>.<id>.connection.<inst>.op.<opId> and are acked on
// ….ack with absolute credit. The consumer ([Op]) takes frames strictly in
// seq order, drops duplicates, and on a gap, a reconnect of its own
// connection or a silence reattaches from the first seq it lacks: nothing
// is lost or doubled. The op id is the OpStart's request_id.

// Op-stream defaults (control.md §9).
const (
	DefaultOpWindow      = 4 << 20
	DefaultOpAckInterval = 5 * time.Second
	DefaultSilenceProbe  = 30 * time.Second
	DefaultReconnectHold = 120 * time.Second
	// opPoll is how often a consumer waiting for frames checks its
	// connection for a reconnect and the silence probe.
	opPoll = 250 * time.Millisecond
)

// ErrOpStreamUnavailable: the session cannot carry op-stream (no live
// connection instance, or an RPC without a NATS connection).
var ErrOpStreamUnavailable = errors.New("control: op-stream needs a NATS RPC and the machine's live connection instance")

// OpLostError says the machine no longer knows the op (evicted from its
// completed-op store, or the agent restarted).
type OpLostError struct {
	OpID   string
	Reason agentpb.OpLostReason
}

func (e *OpLostError) Error() string {
	return fmt.Sprintf("op %s is lost on the machine (%s)", e.OpID, e.Reason)
}

// OpOptions tune one op's consumer. A nil *OpOptions means the defaults.
type OpOptions struct {
	Window        uint64        // credit beyond what was consumed; default DefaultOpWindow
	AckInterval   time.Duration // acks at least this often while frames arrive; default 5s
	SilenceProbe  time.Duration // reattach after this long without a frame; default 30s
	ReconnectHold time.Duration // give up when the machine is unreachable this long; default 120s
}

func (o *OpOptions) withDefaults() OpOptions {
	var r OpOptions
	if o != nil {
		r = *o
	}
	if r.Window == 0 {
		r.Window = DefaultOpWindow
	}
	if r.AckInterval <= 0 {
		r.AckInterval = DefaultOpAckInterval
	}
	if r.SilenceProbe <= 0 {
		r.SilenceProbe = DefaultSilenceProbe
	}
	if r.ReconnectHold <= 0 {
		r.ReconnectHold = DefaultReconnectHold
	}
	return r
}

// OpStreamResolver says whether a machine offers op-stream: its live
// instance's Hello said Capabilities.op_stream (control.md §9). When a
// session's Instances resolver implements it too (a store.Store does),
// ReadFileAll, WriteFileAll and UsesOpStream follow it; without one a
// machine with a live instance is tried, and an agent that answers the
// OpStart UNSUPPORTED gets the v1 ops.
type OpStreamResolver interface {
	OffersOpStream(ctx context.Context, ws, agent string) (bool, error)
}

// WithoutOpStream returns a session on the same machine that always uses
// the v1 ops (the baseline of benchmarks, a control plane whose server
// flag is off).
func (s *Session) WithoutOpStream() *Session {
	c := *s
	c.noOpStream = true
	return &c
}

// UsesOpStream reports whether ops that have an op-stream form (exec
// streaming, whole-file transfers) go over it: the session allows it, the
// machine has a live connection instance, and its Hello offered op_stream
// (when the Instances resolver knows).
func (s *Session) UsesOpStream(ctx context.Context) bool {
	if s.noOpStream {
		return false
	}
	if _, err := s.opRoute(ctx); err != nil {
		return false // the v1 op reports why the machine cannot be reached
	}
	if r, ok := s.instances.(OpStreamResolver); ok {
		offered, err := r.OffersOpStream(ctx, s.ws, s.agent)
		return err == nil && offered
	}
	return true
}

// opStreamRefused: the agent does not serve op-stream (an older agent, or
// one with it turned off) or not for this file (a chunked write replaces
// regular files only), so the v1 ops are the way.
func opStreamRefused(err error) bool {
	var ce *Error
	return errors.Is(err, ErrOpStreamUnavailable) || (errors.As(err, &ce) && ce.Code == agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED)
}

// Conn returns the RPC's NATS connection (dialing it if needed): op-stream
// subscribes to op subjects and publishes acks on it.
func (r *NATSRPC) Conn(ctx context.Context) (*nats.Conn, error) { return r.conn(ctx) }

// opRoute is where an op's traffic goes.
type opRoute struct {
	nc   *nats.Conn
	inst string
	rpc  string // the instance's rpc subject
}

func (s *Session) opRoute(ctx context.Context) (opRoute, error) {
	r, ok := s.rpc.(interface {
		Conn(context.Context) (*nats.Conn, error)
	})
	if !ok || s.instances == nil {
		return opRoute{}, ErrOpStreamUnavailable
	}
	subj, inst, err := s.route(ctx)
	if err != nil {
		return opRoute{}, err
	}
	if inst == "" {
		return opRoute{}, ErrOpStreamUnavailable
	}
	nc, err := r.Conn(ctx)
	if err != nil {
		return opRoute{}, FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE, Message: err.Error()})
	}
	return opRoute{nc: nc, inst: inst, rpc: subj}, nil
}

// Op is the consumer of one op's frames.
type Op struct {
	s     *Session
	id    string
	route opRoute
	opts  OpOptions
	sub   *nats.Subscription

	next       uint64 // the seq wanted next
	consumed   uint64 // data bytes delivered
	ackedBytes uint64 // consumed at the last ack
	lastAck    time.Time
	gen        uint64
	reconnects uint64
	lastFrame  time.Time
	lastReach  atomic.Int64 // unix ns the machine last answered (chunk senders share the op)
	lastAttach time.Time
	done       bool
}

// ID is the op id (the OpStart's request_id).
func (o *Op) ID() string { return o.id }

// Position is where the consumer stands: the seq it wants next (every
// frame before it was delivered) and the data bytes delivered. A consumer
// in another process resumes with AttachOp(id, seq, bytes): credit is
// absolute, counted in the op's data bytes.
func (o *Op) Position() (nextSeq, dataBytes uint64) { return o.next, o.consumed }

// StartOp starts an op with the given body (exactly one of exec, fs_read,
// fs_write) and returns its consumer. The op subject is subscribed before
// the start is sent, so no frame is missed. A retried start (TIMEOUT,
// AGENT_OFFLINE before the hold ends) reuses the op id: the machine
// attaches instead of running it twice.
func (s *Session) StartOp(ctx context.Context, start *agentpb.OpStart, opts *OpOptions) (*Op, *agentpb.OpStarted, error) {
	o, err := s.newOp(ctx, uuid.NewString(), opts)
	if err != nil {
		return nil, nil, err
	}
	start.WindowBytes = o.opts.Window
	req := &agentpb.ControlRequest{RequestId: o.id, Epoch: s.epoch, Op: &agentpb.ControlRequest_OpStart{OpStart: start}}
	resp, err := o.request(ctx, req)
	if err != nil {
		o.Close()
		return nil, nil, err
	}
	started := resp.GetOpStart()
	if !started.GetAccepted() {
		o.Close()
		return nil, started, &OpLostError{OpID: o.id, Reason: started.GetStatus().GetLostReason()}
	}
	return o, started, nil
}

// AttachOp consumes an op started elsewhere (another process, before a
// restart of the control side) from fromSeq, dataBytes into its data (see
// Op.Position; 1, 0: from the first frame).
func (s *Session) AttachOp(ctx context.Context, id string, fromSeq, dataBytes uint64, opts *OpOptions) (*Op, error) {
	o, err := s.newOp(ctx, id, opts)
	if err != nil {
		return nil, err
	}
	o.next = max(fromSeq, 1)
	o.consumed = dataBytes
	o.gen = uint64(time.Now().UnixNano()) // a newer consumer than any before
	if _, err := o.attach(ctx); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

func (s *Session) newOp(ctx context.Context, id string, opts *OpOptions) (*Op, error) {
	if !subject.ValidToken(id) {
		return nil, fmt.Errorf("control: op id %q is not a subject token", id)
	}
	route, err := s.opRoute(ctx)
	if err != nil {
		return nil, err
	}
	o := &Op{s: s, id: id, route: route, opts: opts.withDefaults(), next: 1, lastFrame: time.Now(), lastAck: time.Now()}
	o.lastReach.Store(time.Now().UnixNano())
	o.sub, err = route.nc.SubscribeSync(subject.Connection(s.ws, s.agent, route.inst) + "." + subject.Op + "." + id)
	if err != nil {
		return nil, fmt.Errorf("control: subscribe op frames: %w", err)
	}
	// Frames wait here, never dropped as a slow consumer: the agent's
	// credit bounds them at about a window plus one frame.
	_ = o.sub.SetPendingLimits(-1, int(o.opts.Window)*2+(8<<20))
	fctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := route.nc.FlushWithContext(fctx); err != nil {
		o.sub.Unsubscribe()
		return nil, fmt.Errorf("control: subscribe op frames: %w", err)
	}
	o.reconnects = route.nc.Stats().Reconnects
	return o, nil
}

// request sends one op request on the instance's rpc subject.
func (o *Op) request(ctx context.Context, req *agentpb.ControlRequest) (*agentpb.ControlResponse, error) {
	resp, err := o.s.rpc.Request(ctx, o.route.rpc, req, o.s.timeout)
	if err != nil {
		return nil, err
	}
	resp, err = checkResponse(req, resp)
	if err == nil {
		o.lastReach.Store(time.Now().UnixNano())
	}
	return resp, err
}

// Close stops consuming (the op goes on on the machine).
func (o *Op) Close() {
	if o.sub != nil {
		_ = o.sub.Unsubscribe()
	}
}

// Cancel asks the machine to end the op (its process tree is killed); the
// exit frame, still to be consumed, says cancelled.
func (o *Op) Cancel(ctx context.Context) (*agentpb.OpStatus, error) {
	resp, err := o.request(ctx, &agentpb.ControlRequest{RequestId: uuid.NewString(), Epoch: o.s.epoch,
		Op: &agentpb.ControlRequest_OpCancel{OpCancel: &agentpb.OpCancel{OpId: o.id}}})
	if err != nil {
		return nil, err
	}
	return resp.GetOpStatus(), nil
}

// Query asks the machine how the op stands.
func (o *Op) Query(ctx context.Context) (*agentpb.OpStatus, error) {
	resp, err := o.request(ctx, &agentpb.ControlRequest{RequestId: uuid.NewString(), Epoch: o.s.epoch,
		Op: &agentpb.ControlRequest_OpQuery{OpQuery: &agentpb.OpQuery{OpId: o.id}}})
	if err != nil {
		return nil, err
	}
	return resp.GetOpStatus(), nil
}

// attach asks the machine to replay from o.next with fresh credit.
func (o *Op) attach(ctx context.Context) (*agentpb.OpStatus, error) {
	o.lastAttach = time.Now()
	resp, err := o.request(ctx, &agentpb.ControlRequest{RequestId: uuid.NewString(), Epoch: o.s.epoch,
		Op: &agentpb.ControlRequest_OpAttach{OpAttach: &agentpb.OpAttach{OpId: o.id, FromSeq: o.next, AttachGeneration: o.gen, WindowBytes: o.opts.Window}}})
	if err != nil {
		return nil, err
	}
	st := resp.GetOpStatus()
	if st.GetState() == agentpb.OpState_OP_STATE_LOST {
		return st, &OpLostError{OpID: o.id, Reason: st.GetLostReason()}
	}
	o.ackedBytes = o.consumed
	return st, nil
}

// Next returns the op's next frame in seq order (data, progress, then the
// exit frame last); after the exit it returns ErrOpDone. Data
// bytes alias the received message and stay valid.
func (o *Op) Next(ctx context.Context) (*agentpb.OpFrame, error) {
	if o.done {
		return nil, ErrOpDone
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		msg, err := o.sub.NextMsg(opPoll)
		if errors.Is(err, nats.ErrTimeout) {
			if err := o.probe(ctx); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("control: op %s frames: %w", o.id, err)
		}
		f, err := decodeFrame(msg.Data)
		if err != nil {
			continue // not ours to judge; a replay brings the real one
		}
		switch {
		case f.GetSeq() < o.next: // a replay of what we have
			continue
		case f.GetSeq() > o.next: // a gap: frames were lost on the way
			if time.Since(o.lastAttach) > opPoll {
				if err := o.reattach(ctx); err != nil {
					return nil, err
				}
			}
			continue
		}
		o.next++
		o.lastFrame = time.Now()
		if d := f.GetData(); d != nil {
			o.consumed += uint64(len(d.GetBytes()))
		}
		if f.GetExit() != nil {
			o.done = true
			o.ack(true)
			return f, nil
		}
		if o.consumed-o.ackedBytes >= o.opts.Window/4 || time.Since(o.lastAck) >= o.opts.AckInterval {
			o.ack(false)
		}
		return f, nil
	}
}

// ErrOpDone is returned by Next after the exit frame.
var ErrOpDone = errors.New("control: op ended")

// probe runs while no frame arrives: a reconnect of our connection (frames
// published meanwhile went nowhere) or a long silence reattaches.
func (o *Op) probe(ctx context.Context) error {
	rc := o.route.nc.Stats().Reconnects
	if rc != o.reconnects || time.Since(o.lastFrame) >= o.opts.SilenceProbe {
		o.reconnects = rc
		o.lastFrame = time.Now()
		return o.reattach(ctx)
	}
	if time.Since(o.lastAck) >= o.opts.AckInterval {
		o.ack(false)
	}
	return nil
}

// reattach replays from o.next; an unreachable machine is tolerated for
// the reconnect hold.
func (o *Op) reattach(ctx context.Context) error {
	_, err := o.attach(ctx)
	var lost *OpLostError
	var ce *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &lost), ctx.Err() != nil:
		return err
	case errors.As(err, &ce) && !ce.Retryable && ce.Code != agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE:
		return err // the machine answered no: retrying cannot help
	case time.Since(time.Unix(0, o.lastReach.Load())) > o.opts.ReconnectHold:
		return fmt.Errorf("control: op %s: the machine was unreachable for %v: %w", o.id, o.opts.ReconnectHold, err)
	}
	return nil // try again at the next probe
}

// ack publishes the consumer's position and absolute credit.
func (o *Op) ack(final bool) {
	a := &agentpb.OpAck{OpId: o.id, AckedSeq: o.next - 1, CreditBytes: o.consumed + o.opts.Window, Final: final, AttachGeneration: o.gen}
	b, _ := proto.Marshal(a)
	_ = o.route.nc.Publish(subject.Connection(o.s.ws, o.s.agent, o.route.inst)+"."+subject.Ack, b)
	o.ackedBytes, o.lastAck = o.consumed, time.Now()
}

// decodeFrame decodes an OpFrame; a data frame's bytes alias b (no copy of
// bulk data), other bodies go through proto.
func decodeFrame(b []byte) (*agentpb.OpFrame, error) {
	f := &agentpb.OpFrame{}
	rest := b
	for len(rest) > 0 {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		rest = rest[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v, m := protowire.ConsumeString(rest)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			f.OpId, rest = v, rest[m:]
		case num == 2 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(rest)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			f.Seq, rest = v, rest[m:]
		case num == 10 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(rest)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			d, err := decodeData(v)
			if err != nil {
				return nil, err
			}
			f.Body, rest = &agentpb.OpFrame_Data{Data: d}, rest[m:]
		default:
			// progress, exit, or anything newer: the general decoder.
			f = &agentpb.OpFrame{}
			return f, proto.Unmarshal(b, f)
		}
	}
	return f, nil
}

func decodeData(b []byte) (*agentpb.OpData, error) {
	d := &agentpb.OpData{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			d.Channel, b = agentpb.OpChannel(v), b[m:]
		case num == 2 && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			d.Bytes, b = v, b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return d, nil
}
