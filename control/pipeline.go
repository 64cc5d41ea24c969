package control

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Pipeliner is a transport that can keep several requests to one subject in
// flight while publishing them in call order. NATS delivers one connection's
// messages in publish order, so an agent that serves a path's writes in
// arrival order (ours does; the reference agent is sequential) applies
// pipelined appends in order.
type Pipeliner interface {
	Pipeline(ctx context.Context, subject string) (*Pipeline, error)
}

// Pipeline publishes requests in order on one connection and collects their
// replies on a private inbox. Not safe for concurrent Send.
type Pipeline struct {
	rpc     *NATSRPC
	nc      *nats.Conn
	sub     *nats.Subscription
	subject string
	inbox   string
	next    uint64

	mu      sync.Mutex
	pending map[string]chan *nats.Msg
}

// Pending is the reply of one pipelined request.
type Pending struct {
	req  *agentpb.ControlRequest
	ch   chan *nats.Msg
	resp *agentpb.ControlResponse // set when the outcome is known at send time
	// cause is the transport error behind a synthesized AGENT_OFFLINE.
	cause error
	p     *Pipeline
	tok   string
}

// Pipeline opens a pipeline to subject (dialing if needed).
func (r *NATSRPC) Pipeline(ctx context.Context, subject string) (*Pipeline, error) {
	nc, err := r.conn(ctx)
	if err != nil {
		return nil, err
	}
	p := &Pipeline{rpc: r, nc: nc, subject: subject, inbox: nc.NewInbox(), pending: map[string]chan *nats.Msg{}}
	p.sub, err = nc.Subscribe(p.inbox+".*", p.onReply)
	if err != nil {
		return nil, fmt.Errorf("control: pipeline inbox: %w", err)
	}
	return p, nil
}

func (p *Pipeline) onReply(m *nats.Msg) {
	tok := m.Subject[len(p.inbox)+1:]
	p.mu.Lock()
	ch := p.pending[tok]
	delete(p.pending, tok)
	p.mu.Unlock()
	if ch != nil {
		ch <- m
	}
}

// Send publishes req now; Wait collects its reply.
func (p *Pipeline) Send(req *agentpb.ControlRequest) (*Pending, error) {
	data, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("control: encode request: %w", err)
	}
	p.next++
	tok := strconv.FormatUint(p.next, 36)
	f := &Pending{req: req, ch: make(chan *nats.Msg, 1), p: p, tok: tok}
	p.mu.Lock()
	p.pending[tok] = f.ch
	p.mu.Unlock()
	if err := p.nc.PublishMsg(&nats.Msg{Subject: p.subject, Reply: p.inbox + "." + tok, Data: data}); err != nil {
		p.forget(tok)
		// Without a context failed never returns an error.
		f.resp, f.cause, _ = p.rpc.failed(context.Background(), p.subject, p.nc, req, len(data), err)
	}
	return f, nil
}

func (p *Pipeline) forget(tok string) {
	p.mu.Lock()
	delete(p.pending, tok)
	p.mu.Unlock()
}

// Wait returns the reply, mapped like NATSRPC.Request: no responders is
// AGENT_OFFLINE, no reply within timeout is TIMEOUT, and an AgentError is a
// *Error.
func (f *Pending) Wait(ctx context.Context, timeout time.Duration) (*agentpb.ControlResponse, error) {
	resp := f.resp
	if resp == nil {
		var err error
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case m := <-f.ch:
			if m.Header.Get("Status") == "503" {
				err = nats.ErrNoResponders
				break
			}
			resp = decodeReply(f.req.GetRequestId(), m.Data)
		case <-t.C:
			f.p.forget(f.tok)
			err = nats.ErrTimeout
		case <-ctx.Done():
			f.p.forget(f.tok)
			err = ctx.Err()
		}
		if err != nil {
			if resp, f.cause, err = f.p.rpc.failed(ctx, f.p.subject, f.p.nc, f.req, 0, err); err != nil {
				return nil, err
			}
		}
	}
	out, err := checkResponse(f.req, resp)
	return out, attachCause(err, f.cause)
}

// Close releases the inbox. Replies still in flight are dropped.
func (p *Pipeline) Close() { _ = p.sub.Unsubscribe() }
