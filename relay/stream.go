package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/quartz"
	"github.com/coder/websocket"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// Handshake rejection texts (relay.md §1.4), sent in StreamOpenAck.error.message.
const (
	msgNoChannel         = "StreamOpen carried no channel key"
	msgKeyMismatch       = "channel key does not match the dial query"
	msgUnspecifiedRole   = "StreamOpen had an unspecified role"
	msgNoAgentSecret     = "relay producer-token secret not configured"
	msgAgentScope        = "agent token scope does not match the channel key"
	msgNoViewerSecret    = "viewer stream-token secret not configured"
	msgViewerWorkspace   = "viewer token workspace does not match the channel key"
	msgViewerPort        = "viewer token port does not match the channel key"
	msgViewerAgent       = "viewer token agent does not match the channel key"
	msgHandshakeTimeout  = "no StreamOpen within the handshake timeout"
	prefixAgentToken     = "agent token: "
	prefixViewerToken    = "viewer token: "
	prefixExpectedOpen   = "expected StreamOpen, got "
	prefixUndecodable    = "undecodable StreamOpen: "
	prefixSocketBeforeOp = "socket error before open: "
)

// dialQuery is the parsed /stream query.
type dialQuery struct {
	ws, agent string
	port      uint32
	channel   string // "" for the v1 query
}

func parseQuery(raw string) (dialQuery, bool) {
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return dialQuery{}, false
	}
	get := func(k string) (string, bool) {
		v, ok := vals[k]
		if !ok || len(v) == 0 {
			return "", false
		}
		return v[0], true
	}
	var q dialQuery
	var ok1, ok2, ok3 bool
	q.ws, ok1 = get("ws")
	q.agent, ok2 = get("agent")
	ps, ok3 := get("port")
	if !ok1 || !ok2 || !ok3 {
		return dialQuery{}, false
	}
	p, err := strconv.ParseUint(ps, 10, 32)
	if err != nil {
		return dialQuery{}, false
	}
	q.port = uint32(p)
	q.channel, _ = get("channel")
	return q, true
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	if ip := s.clientIP.ClientIP(r); !s.opens.Allow(ip) {
		s.log.Debug("stream open rate-limited", "client", ip)
		w.Header().Set("Retry-After", strconv.Itoa(s.opens.Bucket().RetryAfter()))
		http.Error(w, "too many stream opens; slow down", http.StatusTooManyRequests)
		return
	}
	q, ok := parseQuery(r.URL.RawQuery)
	if !ok {
		http.Error(w, "stream query needs ws, agent and a u32 port", http.StatusBadRequest)
		return
	}
	c, err := websocket.Accept(smallBuffers{w}, r, acceptOptions)
	if err != nil {
		return // Accept has answered with a 4xx
	}
	c.SetReadLimit(frame.MaxMessageSize)
	// The session runs on a fresh goroutine so net/http's connection state
	// (request, headers, its deep stack) is released for long-lived sockets.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.session(c, q)
	}()
}

// session runs one relay connection: handshake, attach, ack, replay, splice.
func (s *Server) session(c *websocket.Conn, q dialQuery) {
	defer c.CloseNow()
	open, ok := s.readOpen(c)
	if !ok {
		return
	}
	log := s.log.With("role", open.GetRole().String(), "ws", q.ws, "agent", q.agent, "port", q.port,
		"channel", open.GetChannel().GetChannelId(), "resume", open.GetResumeFromSeq())
	viewer, reject := s.authorize(q, open)
	if reject != "" {
		s.metrics.OpensRejected.Add(1)
		log.Info("stream open rejected", "reason", reject)
		s.reject(c, reject)
		return
	}
	a := s.newAttachReq(q, open, viewer)
	if s.cl != nil && !s.reg.hasLocal(a) {
		if s.cl.attachRemote(c, log, open, q, a) != remoteNone {
			return
		}
	}
	at, rej := s.reg.attach(a)
	if rej != nil {
		log.Info("stream open rejected", "reason", rej.msg)
		s.rejectWith(c, rej.msg, rej.retryable)
		return
	}
	ch, sd, replay := at.ch, at.side, at.replay
	replayed := len(replay)
	if s.cl != nil && at.ch != nil {
		if at.created {
			s.cl.makeHome(at.ch)
		} else if a.role == agentpb.StreamRole_STREAM_ROLE_AGENT {
			s.cl.refreshHome(at.ch) // its channel id may be a new alias
		}
	}

	// Ack, then the replay straight to the socket, then live frames from the queue.
	ack := frame.MustEncode(&agentpb.StreamOpenAck{Accepted: true, ResumeFromSeq: open.GetResumeFromSeq()})
	err := s.write(c, ack)
	for i := 0; err == nil && i < len(replay); i++ {
		err = s.write(c, replay[i].wire)
	}
	replay = nil
	if at.final != nil {
		// The producer closed before this viewer came: the output it
		// missed (above), then the producer's close, then the drop.
		if err == nil {
			err = s.write(c, at.final)
		}
		log.Info("stream open accepted after the producer closed", "replay", replayed, "delivered", err == nil)
		return
	}
	log.Info("stream open accepted", "gen", sd.gen, "replay", replayed)
	var drainers sync.WaitGroup
	if err == nil {
		a.q.resume(func() {
			drainers.Add(1)
			go func() {
				defer drainers.Done()
				s.drain(c, a.q)
			}()
		})
		stopPing := s.keepalive(c)
		s.readLoop(c, ch, sd)
		stopPing()
	}
	s.reg.detach(ch, sd)
	a.q.finish(nil)
	c.CloseNow()
	drainers.Wait()
	log.Debug("stream closed", "gen", sd.gen)
}

// newAttachReq is the attach request of an authorized open dialled with q.
func (s *Server) newAttachReq(q dialQuery, open *agentpb.StreamOpen, viewer *token.ViewerClaims) *attachReq {
	return &attachReq{
		key:       routeKey{ws: q.ws, agent: q.agent, port: q.port, channel: q.channel},
		pinned:    q.channel != "",
		channelID: open.GetChannel().GetChannelId(),
		role:      open.GetRole(),
		resume:    open.GetResumeFromSeq(),
		viewer:    viewer,
		q:         newOutq(s.opts.QueueLen),
	}
}

// smallBuffers hands the WebSocket library small bufio buffers after the
// hijack instead of net/http's two 4 KiB ones: idle sockets are the common
// case, and payload reads and writes larger than the buffer bypass it.
type smallBuffers struct{ http.ResponseWriter }

const (
	hijackReadBuf  = 1 << 10
	hijackWriteBuf = 2 << 10
)

func (h smallBuffers) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func (h smallBuffers) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if err := brw.Writer.Flush(); err != nil {
		nc.Close()
		return nil, nil, err
	}
	// Bytes net/http already read past the request (its background read can
	// hold the first byte of the first frame) must stay buffered in the new
	// reader: the WebSocket library re-wraps only what is buffered.
	var br *bufio.Reader
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(b)), nc), max(n, hijackReadBuf))
		if _, err := br.Peek(n); err != nil {
			nc.Close()
			return nil, nil, err
		}
	} else {
		br = bufio.NewReaderSize(nc, hijackReadBuf)
	}
	return nc, bufio.NewReadWriter(br, bufio.NewWriterSize(nc, hijackWriteBuf)), nil
}

// readOpen waits for the first binary message and decodes it as a
// StreamOpen. On failure it has already sent the rejected ack (when it can).
func (s *Server) readOpen(c *websocket.Conn) (*agentpb.StreamOpen, bool) {
	var timedOut atomic.Bool
	timer := time.AfterFunc(s.opts.HandshakeTimeout, func() {
		timedOut.Store(true)
		s.reject(c, msgHandshakeTimeout)
	})
	defer timer.Stop()
	for {
		typ, b, err := c.Read(s.ctx)
		if err != nil {
			if !timedOut.Load() && websocket.CloseStatus(err) == -1 && s.ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				s.reject(c, prefixSocketBeforeOp+err.Error())
			}
			return nil, false // "socket closed before StreamOpen": nothing to deliver
		}
		if typ != websocket.MessageBinary {
			continue
		}
		if !timer.Stop() {
			return nil, false // the timeout won the race and is closing the socket
		}
		tag, m, err := frame.Decode(b)
		switch {
		case err != nil:
			s.reject(c, prefixUndecodable+err.Error())
			return nil, false
		case tag != frame.TagOpen:
			s.reject(c, prefixExpectedOpen+tag.String())
			return nil, false
		}
		return m.(*agentpb.StreamOpen), true
	}
}

// authorize applies relay.md §1.4 step 3; the first failing check wins. For
// a viewer it returns the claims of the single verification (the epoch).
func (s *Server) authorize(q dialQuery, open *agentpb.StreamOpen) (*token.ViewerClaims, string) {
	key := open.GetChannel()
	if key == nil {
		return nil, msgNoChannel
	}
	if key.GetWorkspaceId() != q.ws || key.GetAgentId() != q.agent || key.GetPort() != q.port ||
		(q.channel != "" && key.GetChannelId() != q.channel) {
		return nil, msgKeyMismatch
	}
	now := s.opts.Now()
	switch open.GetRole() {
	case agentpb.StreamRole_STREAM_ROLE_AGENT:
		secret := s.opts.AgentSecret()
		if secret == "" {
			return nil, msgNoAgentSecret
		}
		c, err := token.VerifyAgent(secret, open.GetToken(), now)
		if err != nil {
			return nil, prefixAgentToken + err.Error()
		}
		if c.WorkspaceID != key.GetWorkspaceId() || c.AgentID != key.GetAgentId() {
			return nil, msgAgentScope
		}
		if gs, ok := s.opts.Revocations.(GenerationSource); ok && c.Generation() < gs.CredentialGeneration(c.WorkspaceID, c.AgentID) {
			return nil, msgStaleGeneration
		}
		return nil, ""
	case agentpb.StreamRole_STREAM_ROLE_CLIENT:
		if s.opts.StreamTokenSecret == "" {
			return nil, msgNoViewerSecret
		}
		c, err := token.VerifyViewer(s.opts.StreamTokenSecret, open.GetToken(), now)
		if err != nil {
			return nil, prefixViewerToken + err.Error()
		}
		if c.WorkspaceID != key.GetWorkspaceId() {
			return nil, msgViewerWorkspace
		}
		if c.Port != key.GetPort() {
			return nil, msgViewerPort
		}
		// A machine-scoped token (our agentId claim) opens only that machine's channels.
		if c.AgentID != "" && c.AgentID != key.GetAgentId() {
			return nil, msgViewerAgent
		}
		return &c, ""
	}
	return nil, msgUnspecifiedRole
}

// reject sends a rejected ack and drops the socket (no WebSocket close frame).
func (s *Server) reject(c *websocket.Conn, msg string) { s.rejectWith(c, msg, false) }

// rejectWith is reject with the ack's retryable flag.
func (s *Server) rejectWith(c *websocket.Conn, msg string, retryable bool) {
	ack := frame.MustEncode(&agentpb.StreamOpenAck{Error: &agentpb.AgentError{
		Code: agentpb.ErrorCode_ERROR_CODE_STREAM, Message: msg, Retryable: retryable}})
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	c.Write(ctx, websocket.MessageBinary, ack)
	cancel()
	c.CloseNow()
}

func (s *Server) write(c *websocket.Conn, b []byte) error {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.WriteTimeout)
	err := c.Write(ctx, websocket.MessageBinary, b)
	cancel()
	return err
}

// readLoop is the inbound half of the splice (relay.md §1.5).
func (s *Server) readLoop(c *websocket.Conn, ch *channel, sd *side) {
	for {
		typ, b, err := readMessage(s.ctx, c)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary && s.inbound(ch, sd, b) {
			return
		}
	}
}

// inbound handles one binary message from side sd (its socket here, or its
// proxy on another replica); it reports whether the side closed.
func (s *Server) inbound(ch *channel, sd *side, b []byte) (closed bool) {
	if sd.role == agentpb.StreamRole_STREAM_ROLE_AGENT && len(b) > 0 && b[0] == byte(frame.TagFrame) {
		// The hot path: agent output is forwarded as received, so only
		// seq and the data length are read.
		fi, err := frame.PeekFrame(b)
		if err != nil {
			s.log.Debug("undecodable relay message ignored", "err", err)
			return false
		}
		s.reg.fromAgent(ch, sd, fi, b)
		return false
	}
	tag, m, err := frame.Decode(b)
	if err != nil {
		s.log.Debug("undecodable relay message ignored", "err", err)
		return false
	}
	switch tag {
	case frame.TagFrame:
		s.reg.fromViewer(ch, sd, m.(*agentpb.StreamFrame))
	case frame.TagDesktopInput:
		s.reg.desktopInput(ch, sd, b)
	case frame.TagClose:
		s.reg.closeFrom(ch, sd, b)
		return true
	}
	return false
}

// drain is the outbound half of the splice: it writes what is queued and
// exits when the queue is empty. It drops the socket after writing a
// StreamClose, when the queue is finished, or when a write fails.
func (s *Server) drain(c *websocket.Conn, q *outq) {
	drainQueue(q, func(b []byte) error { return s.write(c, b) }, func() { c.CloseNow() })
}

// drainQueue writes what q holds with write and exits when q is empty. After
// a StreamClose, a failed write, or the end of a finished queue it calls
// drop (the socket, or a proxied side, goes away).
func drainQueue(q *outq, write func([]byte) error, drop func()) {
	var spare [][]byte
	for {
		items, stop, finished := q.take(spare)
		for i, b := range items {
			if write(b) != nil || b[0] == byte(frame.TagClose) {
				q.finish(nil)
				drop()
				return
			}
			items[i] = nil
		}
		if stop {
			if finished {
				drop()
			}
			return
		}
		spare = items
	}
}

// keepalive pings the peer every PingInterval and drops the socket when a
// pong does not come back within PingTimeout (half-open TCP). The read loop
// must be running: it is what receives the pong. Both periods run on
// opts.Clock (timers tagged "relay", "keepalive" and "ping-timeout").
func (s *Server) keepalive(c *websocket.Conn) (stop func()) {
	if s.opts.PingInterval <= 0 {
		return func() {}
	}
	clk := s.opts.Clock
	var t *quartz.Timer
	var mu sync.Mutex
	stopped := false
	t = clk.AfterFunc(s.opts.PingInterval, func() {
		ctx, cancel := context.WithCancel(s.ctx)
		deadline := clk.AfterFunc(s.opts.PingTimeout, cancel, "relay", "ping-timeout")
		err := c.Ping(ctx)
		deadline.Stop()
		cancel()
		if err != nil {
			c.CloseNow() // the read loop ends and the side detaches
			return
		}
		mu.Lock()
		if !stopped {
			t.Reset(s.opts.PingInterval, "relay", "keepalive")
		}
		mu.Unlock()
	}, "relay", "keepalive")
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}
