package control

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// ConnFactory yields the NATS connection an [NATSRPC] sends on. It is called
// lazily, at the first request, and again whenever the previous connection
// failed (a factory error, a closed connection, a transport error). A factory
// that returns (nil, nil) means "no bus yet": every request is AGENT_OFFLINE.
type ConnFactory func(ctx context.Context) (*nats.Conn, error)

// ErrNoConnection is what [StaticConn] reports for a nil connection.
var ErrNoConnection = errors.New("control: no NATS connection")

// ErrRPCClosed is reported (as AGENT_OFFLINE) once [NATSRPC.Close] ran.
var ErrRPCClosed = errors.New("control: rpc closed")

// StaticConn is a [ConnFactory] for a connection the caller owns (and closes).
// A nil or closed connection reads as "no connection": requests are offline.
func StaticConn(nc *nats.Conn) ConnFactory {
	return func(context.Context) (*nats.Conn, error) {
		if nc == nil {
			return nil, ErrNoConnection
		}
		if nc.IsClosed() {
			return nil, nats.ErrConnectionClosed
		}
		return nc, nil
	}
}

// InboxPrefix is where control connections made by DialNATS receive
// replies. Our auth callout lets no agent read any inbox but its own, but a
// platform whose server still grants the reference's `sub _INBOX.>`
// (control.md §6.4) would expose replies on _INBOX to every agent in the
// account; the private prefix keeps them away from agents under either
// grant. Agents reply to it through the allow-responses permission.
// Platforms that bring their own connection (StaticConn) should set
// nats.CustomInboxPrefix(InboxPrefix) too.
const InboxPrefix = subject.ControlInbox

// DialNATS is a [ConnFactory] that dials urls (comma separated) with opts.
// Each call after the first is a re-dial: it closes the connection it made
// before, so a dropped connection never leaks. The dial gives up when ctx
// ends (a connection that completes later is closed).
//
// The connection is named "opengeni-control" unless opts set a name.
func DialNATS(urls string, opts ...nats.Option) ConnFactory {
	var (
		mu   sync.Mutex
		last *nats.Conn
	)
	all := append([]nats.Option{nats.Name("opengeni-control"), nats.CustomInboxPrefix(InboxPrefix)}, opts...)
	return func(ctx context.Context) (*nats.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		if last != nil {
			last.Close()
			last = nil
		}
		type result struct {
			nc  *nats.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			nc, err := nats.Connect(urls, all...)
			ch <- result{nc, err}
		}()
		select {
		case r := <-ch:
			if r.err != nil {
				return nil, fmt.Errorf("control: dial nats: %w", r.err)
			}
			last = r.nc
			return r.nc, nil
		case <-ctx.Done():
			go func() {
				if r := <-ch; r.nc != nil {
					r.nc.Close()
				}
			}()
			return nil, ctx.Err()
		}
	}
}

// NATSRPC is the [RPC] over NATS request/reply (control.md §2.2).
//
// The connection comes from a [ConnFactory], resolved at the first request
// and memoized; building a NATSRPC never needs a live bus. Unlike the v1
// reference (which caches a failed dial as "no connection" until some other
// error resets it), only a real connection is cached, concurrent requests
// share one in-flight dial, and a failed dial is retried by the next request.
//
// Mapping of transport conditions:
//
//	factory error / nil connection  -> AGENT_OFFLINE (dial again next time)
//	nats.ErrNoResponders            -> AGENT_OFFLINE
//	nats.ErrTimeout, deadline       -> TIMEOUT (retryable)
//	nats.ErrMaxPayload              -> PAYLOAD_TOO_LARGE (request too big to send)
//	any other transport error       -> AGENT_OFFLINE, and the connection is
//	                                   dropped so the next request re-dials
//	reply that does not decode      -> PROTOCOL
//
// A NATSRPC is safe for concurrent use.
type NATSRPC struct {
	factory ConnFactory

	mu     sync.Mutex
	nc     *nats.Conn
	dial   *dialCall
	closed bool
}

type dialCall struct {
	done chan struct{}
	nc   *nats.Conn
	err  error
}

// NewNATSRPC returns an RPC that sends on the connection factory yields. A
// nil factory is allowed: every request is then AGENT_OFFLINE (the reference
// registry's default until the platform injects its bus).
func NewNATSRPC(factory ConnFactory) *NATSRPC {
	return &NATSRPC{factory: factory}
}

var errNilConn = errors.New("control: connection factory returned no connection")

// conn returns the cached connection, or dials one (shared with concurrent
// callers). The dial itself is detached from ctx so one caller giving up does
// not fail the others; each caller stops waiting when its own ctx ends.
func (r *NATSRPC) conn(ctx context.Context) (*nats.Conn, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrRPCClosed
	}
	if r.nc != nil {
		if !r.nc.IsClosed() {
			nc := r.nc
			r.mu.Unlock()
			return nc, nil
		}
		r.nc = nil
	}
	if r.factory == nil {
		r.mu.Unlock()
		return nil, errNilConn
	}
	d := r.dial
	if d == nil {
		d = &dialCall{done: make(chan struct{})}
		r.dial = d
		go r.runDial(context.WithoutCancel(ctx), d)
	}
	r.mu.Unlock()
	select {
	case <-d.done:
		return d.nc, d.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *NATSRPC) runDial(ctx context.Context, d *dialCall) {
	nc, err := r.factory(ctx)
	if err == nil && nc == nil {
		err = errNilConn
	}
	r.mu.Lock()
	r.dial = nil
	if err == nil {
		if r.closed {
			nc.Close()
			nc, err = nil, ErrRPCClosed
		} else {
			r.nc = nc
		}
	}
	r.mu.Unlock()
	d.nc, d.err = nc, err
	close(d.done)
}

// drop forgets nc (if it is still the cached connection) so the next request
// asks the factory again.
func (r *NATSRPC) drop(nc *nats.Conn) {
	r.mu.Lock()
	if r.nc == nc {
		r.nc = nil
	}
	r.mu.Unlock()
}

// Close forgets and closes the cached connection; later requests are
// AGENT_OFFLINE. Use it with [DialNATS]. With [StaticConn] the caller owns the
// connection: close that instead of calling Close.
func (r *NATSRPC) Close() {
	r.mu.Lock()
	nc := r.nc
	r.nc, r.closed = nil, true
	r.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
}

// MaxPayload returns the connection's max payload, resolving the lazy
// connection if needed, or [DefaultMaxPayload] when no connection is available
// or the server did not say.
func (r *NATSRPC) MaxPayload(ctx context.Context) int64 {
	nc, err := r.conn(ctx)
	if err != nil || nc == nil {
		return DefaultMaxPayload
	}
	if mp := nc.MaxPayload(); mp > 0 {
		return mp
	}
	return DefaultMaxPayload
}

// Request implements [RPC]. timeout <= 0 means [DefaultTimeout]; it bounds the
// dial and the round trip together.
func (r *NATSRPC) Request(ctx context.Context, subject string, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error) {
	resp, _, err := r.request(ctx, subject, req, timeout)
	return resp, err
}

// requestBufs recycles encoded requests up to maxPooledRequest bytes.
var requestBufs = sync.Pool{New: func() any { return new([]byte) }}

const maxPooledRequest = 2 << 20

// request is Request that also returns the transport error behind a
// synthesized AGENT_OFFLINE (nil otherwise); [Session] keeps it as
// [Error.Cause].
func (r *NATSRPC) request(ctx context.Context, subject string, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error, error) {
	buf := requestBufs.Get().(*[]byte)
	data, err := proto.MarshalOptions{}.MarshalAppend((*buf)[:0], req)
	if err != nil {
		return nil, nil, fmt.Errorf("control: encode request: %w", err)
	}
	// The publish copies data into the connection's buffer, so the buffer
	// serves the next request (bulk chunks would otherwise allocate their
	// size once more each).
	defer func() {
		if cap(data) <= maxPooledRequest {
			*buf = data[:0]
			requestBufs.Put(buf)
		}
	}()
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id := req.GetRequestId()

	nc, err := r.conn(rctx)
	if err != nil {
		if canceled(ctx) {
			return nil, nil, fmt.Errorf("control: request %s: %w", subject, ctx.Err())
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("control: no NATS connection within %v: %w", timeout, err)
		}
		resp := OfflineResponse(id)
		resp.Error.Detail[DetailNeverSent] = "1" // no connection: nothing left this process
		return resp, err, nil
	}
	msg, err := nc.RequestWithContext(rctx, subject, data)
	if err != nil {
		return r.failed(ctx, subject, nc, req, len(data), err)
	}
	return decodeReply(id, msg.Data), nil, nil
}

// failed maps a transport error of one request (the table on [NATSRPC]);
// [Pending.Wait] and [Pipeline.Send] share it. It returns the synthesized
// response, the transport error behind an AGENT_OFFLINE (its cause), and an
// error only for the caller's own cancellation of ctx. n is the encoded
// request size.
func (r *NATSRPC) failed(ctx context.Context, subject string, nc *nats.Conn, req *agentpb.ControlRequest, n int, err error) (*agentpb.ControlResponse, error, error) {
	if canceled(ctx) {
		return nil, nil, fmt.Errorf("control: request %s: %w", subject, ctx.Err())
	}
	id := req.GetRequestId()
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return OfflineResponse(id), err, nil
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return TimeoutResponse(id), nil, nil
	case errors.Is(err, nats.ErrMaxPayload):
		return requestTooLarge(id, req, n, nc.MaxPayload()), nil, nil
	default:
		r.drop(nc)
		return OfflineResponse(id), err, nil
	}
}

// decodeReply decodes an agent's reply; one that does not decode is PROTOCOL.
func decodeReply(id string, data []byte) *agentpb.ControlResponse {
	resp := new(agentpb.ControlResponse)
	if err := proto.Unmarshal(data, resp); err != nil {
		return synthesized(id, agentpb.ErrorCode_ERROR_CODE_PROTOCOL,
			"agent reply did not decode as a ControlResponse: "+err.Error(), false)
	}
	return resp
}

// canceled reports whether the caller itself canceled ctx (as opposed to a
// deadline, which is a TIMEOUT).
func canceled(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}

// requestTooLarge mirrors the agent's reply backstop for the request side:
// the request could not be published at all, so nothing reached the machine.
func requestTooLarge(id string, req *agentpb.ControlRequest, n int, max int64) *agentpb.ControlResponse {
	label := opLabel(req)
	resp := synthesized(id, agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE,
		fmt.Sprintf("request for op '%s' is %d bytes, over the transport's negotiated max payload of %d bytes; it could not be sent", label, n, max), false)
	resp.Error.Detail = map[string]string{
		"op":            label,
		"encoded_bytes": strconv.Itoa(n),
		"max_payload":   strconv.FormatInt(max, 10),
	}
	return resp
}
