package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/relayclient"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

// Channel is one registered relay channel, owned across reconnects. Send,
// Flush, Close and the accessors are safe for concurrent use.
type Channel struct {
	cfg  Dialer
	desc *agentpb.StreamChannel
	url  string
	log  *slog.Logger
	bo   *backoff.Backoff

	out   chan []byte                // Send queue (bounded: the backpressure point)
	recv  chan []byte                // inbound frame data, deduplicated, in order
	input chan *agentpb.DesktopInput // inbound desktop input (lossy when full)

	closing     chan struct{} // closed by Close
	closeOnce   sync.Once
	closeReason agentpb.StreamCloseReason
	closeMsg    string
	done        chan struct{} // closed when run has ended
	closeErr    error         // set before done: why the StreamClose was not delivered

	gen        atomic.Uint64 // connection generation
	connected  atomic.Bool
	reconnects atomic.Uint64
	queued     atomic.Uint64 // frames accepted by Send
	shipped    atomic.Uint64 // frames written to a relay socket at least once (seq+1 of the newest)
	resent     atomic.Uint64 // frames written again after a reconnect
	dropped    atomic.Uint64 // inbound frames dropped as already consumed

	mu       sync.Mutex
	shipWake chan struct{} // closed when shipped advances or connErr changes (Flush waiters)
	connErr  error         // why the live connection was lost or the last re-registration failed; nil while registered

	// Owned by the run goroutine.
	sendNext uint64
	replay   replayBuf
	// Owned by the live connection's reader; read by connect only after the
	// previous reader has exited.
	recvNext uint64
}

func newChannel(d *Dialer, desc *agentpb.StreamChannel) *Channel {
	cfg := d.resolved()
	c := &Channel{
		cfg:     cfg,
		desc:    desc,
		url:     DialURL(cfg.RelayURL, desc),
		bo:      &backoff.Backoff{Policy: cfg.Backoff, Clock: cfg.Clock},
		out:     make(chan []byte, cfg.SendQueue),
		recv:    make(chan []byte, cfg.RecvQueue),
		input:   make(chan *agentpb.DesktopInput, cfg.RecvQueue),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		replay:  replayBuf{maxBytes: cfg.ReplayBytes, maxFrames: cfg.ReplayFrames},
	}
	c.log = cfg.Logger.With("component", "stream", "channel", desc.ChannelId, "kind", desc.Kind.String(), "port", desc.Port)
	return c
}

// ID is the channel id ("ch-<nanos hex>-<counter hex>").
func (c *Channel) ID() string { return c.desc.GetChannelId() }

// Descriptor returns a copy of the channel key to hand to the control plane.
func (c *Channel) Descriptor() *agentpb.StreamChannel {
	return &agentpb.StreamChannel{ChannelId: c.desc.ChannelId, WorkspaceId: c.desc.WorkspaceId,
		AgentId: c.desc.AgentId, Kind: c.desc.Kind, Port: c.desc.Port}
}

// Send queues data as the next StreamFrame (it is copied). It blocks while
// the queue is full (the relay is slow or unreachable), which is the
// backpressure a PTY pump wants: nothing is dropped. Empty data is a no-op.
func (c *Channel) Send(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	select {
	case <-c.closing:
		return ErrClosed
	default:
	}
	b := bytes.Clone(data)
	select {
	case c.out <- b:
		c.queued.Add(1)
		return nil
	case <-c.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush waits until every frame accepted by Send before the call has been
// written to a relay socket at least once. It returns early with the
// relay's *RejectedError (or *ProtocolError) when the channel lost its
// registration and the relay refused it back: the frames cannot ship until
// something changes, and the caller deserves the real reason rather than a
// timeout.
func (c *Channel) Flush(ctx context.Context) error {
	target := c.queued.Load()
	for {
		c.mu.Lock()
		if c.shipped.Load() >= target {
			c.mu.Unlock()
			return nil
		}
		if err := c.connErr; relayclient.IsRefusal(err) {
			c.mu.Unlock()
			return fmt.Errorf("relay stream: frames not delivered: %w", err)
		}
		if c.shipWake == nil {
			c.shipWake = make(chan struct{})
		}
		w := c.shipWake
		c.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			if c.shipped.Load() >= target {
				return nil
			}
			return ErrClosed
		}
	}
}

// LastError is why the channel is not registered with the relay now: the
// loss of its connection or its last failed re-registration. It is nil
// while registered.
func (c *Channel) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connErr
}

// setConnErr records the registration state and wakes Flush waiters.
func (c *Channel) setConnErr(err error) {
	c.mu.Lock()
	c.connErr = err
	if c.shipWake != nil {
		close(c.shipWake)
		c.shipWake = nil
	}
	c.mu.Unlock()
}

// Recv delivers the data of inbound StreamFrames in order, each at most
// once (relay replays below the receive cursor are dropped). It is closed
// when the channel has ended. A consumer that stops reading stalls the
// relay socket, never loses frames.
func (c *Channel) Recv() <-chan []byte { return c.recv }

// Input delivers inbound DesktopInput events; events are dropped when the
// consumer falls RecvQueue behind (input is not replayable anyway). It is
// closed when the channel has ended.
func (c *Channel) Input() <-chan *agentpb.DesktopInput { return c.input }

// Done is closed when the channel has ended (after Close).
func (c *Channel) Done() <-chan struct{} { return c.done }

// Stats is a snapshot of a channel's cursors and counters.
type Stats struct {
	Generation uint64 // connections made so far
	Connected  bool
	Reconnects uint64 // successful re-registrations after the first
	SendNext   uint64 // frames accepted by Send (the next one gets this seq once stamped)
	Shipped    uint64 // frames written to a relay at least once
	Resent     uint64 // frames written again after reconnects
	Dropped    uint64 // inbound frames dropped as already consumed
}

// Stats returns the channel's counters.
func (c *Channel) Stats() Stats {
	return Stats{Generation: c.gen.Load(), Connected: c.connected.Load(), Reconnects: c.reconnects.Load(),
		SendNext: c.queued.Load(), Shipped: c.shipped.Load(), Resent: c.resent.Load(), Dropped: c.dropped.Load()}
}

// Close ends the channel: Send refuses new frames, frames already queued are
// written, then StreamClose{reason, message} and a WebSocket close. If the
// relay is unreachable it keeps trying for CloseGrace. It returns once the
// channel has ended; the error says the close could not be delivered.
// Reasons: PROCESS_EXIT "pty exited", NORMAL "desktop closed" (relay.md §7).
func (c *Channel) Close(reason agentpb.StreamCloseReason, message string) error {
	c.closeOnce.Do(func() {
		c.closeReason, c.closeMsg = reason, message
		close(c.closing)
	})
	<-c.done
	return c.closeErr
}

func (c *Channel) markShipped(seq uint64) {
	if seq+1 <= c.shipped.Load() {
		return
	}
	c.shipped.Store(seq + 1)
	c.mu.Lock()
	if c.shipWake != nil {
		close(c.shipWake)
		c.shipWake = nil
	}
	c.mu.Unlock()
}

// run owns the channel's connections until Close: serve the live one, and on
// its loss reconnect with backoff and serve the next.
func (c *Channel) run(cn *conn) {
	defer func() {
		c.connected.Store(false)
		close(c.recv)
		close(c.input)
		close(c.done)
	}()
	var deadline time.Time // set once Close was called: the grace for delivery
	for {
		if cn != nil {
			c.connected.Store(true)
			closed, err := c.serve(cn)
			c.connected.Store(false)
			cn.teardown()
			if closed {
				c.log.Info("relay channel closed", "reason", c.closeReason.String())
				return
			}
			c.log.Info("relay connection lost; reconnecting", "gen", cn.gen, "err", err)
			c.setConnErr(fmt.Errorf("relay connection lost: %w", err))
			cn = nil
		}
		select {
		case <-c.closing:
			if deadline.IsZero() {
				deadline = time.Now().Add(c.cfg.CloseGrace)
			}
		default:
		}
		ctx, cancel := c.reconnectCtx(deadline)
		err := c.bo.Sleep(ctx)
		if err == nil {
			cn, err = c.connect(ctx)
		}
		cancel()
		if err == nil {
			c.setConnErr(nil)
			c.reconnects.Add(1)
			c.log.Info("relay channel re-registered", "gen", cn.gen, "resume", cn.resume)
			continue
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			c.closeErr = fmt.Errorf("relay stream: close not delivered within %v: %w", c.cfg.CloseGrace, err)
			c.log.Warn("relay channel closed without delivering StreamClose", "err", err)
			return
		}
		if !errors.Is(err, context.Canceled) {
			c.setConnErr(err)
			c.log.Debug("relay reconnect failed", "err", err, "attempt", c.bo.Attempt())
		}
	}
}

// reconnectCtx bounds one reconnect attempt: by the close grace once Close
// was called, and is cancelled by Close otherwise (so the grace starts).
func (c *Channel) reconnectCtx(deadline time.Time) (context.Context, context.CancelFunc) {
	if !deadline.IsZero() {
		return context.WithDeadline(context.Background(), deadline)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// serve resends the replay buffer on cn, then writes queued frames until cn
// fails (closed=false) or Close was called and the StreamClose is written
// (closed=true).
func (c *Channel) serve(cn *conn) (closed bool, err error) {
	for _, e := range c.replay.entries() {
		if err := cn.write(e.wire); err != nil {
			return false, err
		}
		c.resent.Add(1)
		c.markShipped(e.seq)
	}
	for {
		// Queued frames go before a dead connection or Close is noticed.
		if err := c.shipQueued(cn); err != nil {
			return false, err
		}
		select {
		case b := <-c.out:
			if err := c.ship(cn, b); err != nil {
				return false, err
			}
		case <-cn.dead:
			return false, cn.cause
		case <-c.closing:
			// Send refuses new frames now: drain what was queued, then close.
			if err := c.shipQueued(cn); err != nil {
				return false, err
			}
			cl := &agentpb.StreamClose{ChannelId: c.desc.ChannelId, Reason: c.closeReason, Message: c.closeMsg}
			if err := cn.write(frame.MustEncode(cl)); err != nil {
				return false, err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			go func() { <-ctx.Done(); cn.ws.CloseNow() }() // the relay drops, never answers the close handshake
			cn.ws.Close(websocket.StatusNormalClosure, "")
			return true, nil
		}
	}
}

// shipQueued ships every frame queued by Send without waiting for more.
func (c *Channel) shipQueued(cn *conn) error {
	for {
		select {
		case b := <-c.out:
			if err := c.ship(cn, b); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// ship stamps data with the next seq, keeps it for resend and writes it.
func (c *Channel) ship(cn *conn, data []byte) error {
	f := &agentpb.StreamFrame{ChannelId: c.desc.ChannelId, Seq: c.sendNext, Data: data,
		ProducedAtMs: c.cfg.Now().UnixMilli()}
	c.sendNext++
	wire := frame.MustEncode(f)
	c.replay.push(replayEntry{seq: f.Seq, wire: wire, size: len(data)})
	if err := cn.write(wire); err != nil {
		return err // kept in the replay buffer: written again after the reconnect
	}
	c.markShipped(f.Seq)
	c.bo.Reset()
	return nil
}

// conn is one WebSocket to the relay, one generation of the channel.
type conn struct {
	c      *Channel
	ws     *websocket.Conn
	gen    uint64
	resume uint64 // the receive cursor presented in this connection's StreamOpen
	ctx    context.Context
	cancel context.CancelFunc

	// delivering is set while the reader waits for the owner to take a
	// frame; keepalive pings then pause (a pong cannot be read meanwhile).
	delivering atomic.Bool

	dead     chan struct{}
	deadOnce sync.Once
	cause    error
	wg       sync.WaitGroup
}

func newConn(c *Channel, ws *websocket.Conn, gen, resume uint64) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	cn := &conn{c: c, ws: ws, gen: gen, resume: resume, ctx: ctx, cancel: cancel, dead: make(chan struct{})}
	cn.wg.Add(1)
	go cn.readLoop()
	if c.cfg.PingInterval > 0 {
		cn.wg.Add(1)
		go cn.pingLoop()
	}
	return cn
}

// fail records the first error of this connection. Errors of a connection
// that is no longer the channel's live generation are ignored.
func (cn *conn) fail(err error) {
	if cn.gen != cn.c.gen.Load() {
		return
	}
	cn.deadOnce.Do(func() {
		cn.cause = err
		close(cn.dead)
	})
}

func (cn *conn) write(b []byte) error {
	ctx, cancel := context.WithTimeout(cn.ctx, cn.c.cfg.WriteTimeout)
	defer cancel()
	if err := cn.ws.Write(ctx, websocket.MessageBinary, b); err != nil {
		cn.fail(err)
		return err
	}
	return nil
}

// teardown drops the socket and waits for the reader, so the receive cursor
// is final before the next connection presents it.
func (cn *conn) teardown() {
	cn.cancel()
	cn.ws.CloseNow()
	cn.wg.Wait()
}

func (cn *conn) readLoop() {
	defer cn.wg.Done()
	c := cn.c
	first := true
	for {
		typ, b, err := cn.ws.Read(cn.ctx)
		if err != nil {
			cn.fail(fmt.Errorf("read: %w", err))
			return
		}
		if typ != websocket.MessageBinary {
			continue
		}
		tag, m, err := frame.Decode(b)
		if err != nil {
			c.log.Debug("undecodable relay message ignored", "err", err)
			continue
		}
		switch tag {
		case frame.TagFrame:
			f := m.(*agentpb.StreamFrame)
			if f.Seq < c.recvNext {
				if !first {
					c.dropped.Add(1)
					continue // already consumed: replayed input never runs twice
				}
				// The relay replays only seq >= our cursor, so a lower seq
				// opening a connection means its input sequence restarted
				// (a relay restart, or the channel was recreated).
				c.log.Info("relay input sequence restarted", "cursor", c.recvNext, "seq", f.Seq)
			}
			first = false
			cn.delivering.Store(true)
			select {
			case c.recv <- f.Data:
				cn.delivering.Store(false)
				c.recvNext = f.Seq + 1
				c.bo.Reset()
			case <-cn.ctx.Done():
				return
			}
		case frame.TagDesktopInput:
			select {
			case c.input <- m.(*agentpb.DesktopInput):
			default:
				c.log.Debug("desktop input dropped: consumer behind")
			}
		case frame.TagClose:
			cl := m.(*agentpb.StreamClose)
			// A viewer's detach or a relay-side teardown: the channel (and
			// its PTY) outlives it; re-register so the next viewer finds it.
			c.log.Info("relay sent StreamClose; re-registering", "reason", cl.GetReason().String(), "message", cl.GetMessage())
			cn.fail(fmt.Errorf("peer closed: %s %q", cl.GetReason(), cl.GetMessage()))
			return
		}
	}
}

func (cn *conn) pingLoop() {
	defer cn.wg.Done()
	t := cn.c.cfg.Clock.NewTicker(cn.c.cfg.PingInterval, "stream", "ping")
	defer t.Stop()
	for {
		select {
		case <-cn.ctx.Done():
			return
		case <-t.C:
		}
		if cn.delivering.Load() {
			continue
		}
		ctx, cancel := context.WithCancel(cn.ctx)
		deadline := cn.c.cfg.Clock.AfterFunc(cn.c.cfg.PingInterval, cancel, "stream", "ping-timeout")
		err := cn.ws.Ping(ctx)
		deadline.Stop()
		cancel()
		if err != nil {
			if cn.ctx.Err() == nil {
				cn.fail(fmt.Errorf("keepalive: %w", err))
				cn.ws.CloseNow()
			}
			return
		}
	}
}
