package relay

// Relay replicas routed through NATS (relay.md §10.4): any number of
// stateless replicas behind a plain load balancer, no ingress affinity.
//
// # Homes and proxies
//
// A channel lives in one replica's memory, its home: the replica where its
// first side (agent or viewer) attached while no home existed. The home owns
// everything the single relay owns: both replay rings, the epoch floors, the
// input sequence, the rate-limit buckets and the viewer list. A side that
// lands on another replica is proxied: that replica verifies the token
// (for the rejection texts of §1.4), asks the home to attach the side (the
// home verifies the token again and applies its own fence; a forged request
// needs a valid token for the very channel it names), and then only moves
// messages: client socket -> NATS -> home, and home -> NATS -> client socket.
// So ordering, replay and the resume cursors have exactly one authority, and
// the single-replica path is unchanged (no NATS: no proxies; with NATS, a
// channel whose sides share the home replica never touches NATS per frame).
//
// # Subjects (prefix "relay")
//
//	relay.ch.<key>.attach   request  proxy -> home: attach a side (JSON, with the StreamOpen)
//	relay.ch.<key>.up       publish  proxy -> home: the client's messages (link framing below)
//	relay.ch.<key>.home     publish  home -> all: the home's claim, every ReplicaHeartbeat
//	relay.r.<replica>.<sid> publish  home -> proxy: messages for one proxied side
//
// <key> is hex(SHA-256(ws, agent, port, channel))[:32]: a viewer cannot put
// NATS tokens or wildcards into a subject, and two keys never share one. A
// v1 home (no `channel` in the agent's query) also answers on the key with
// its channel id, so next-revision viewers on other replicas find it, as the
// single registry's lookup does. <sid> is 128 random bits per proxied side.
//
// Least privilege for the relay's NATS user (ReplicaNATSPermissions):
// publish and subscribe "relay.>" and the connection's inbox prefix (attach
// replies). No other user (agents, control clients) needs, or should get,
// any "relay.>" permission: with it a client could forge link messages.
//
// # Link framing, ordering and flow control
//
// A link message is kind(1) || link seq(8, big endian) || payload; an up
// message puts the 32-byte sid after the kind. Kinds: 'm' a relay message
// (or its last chunk), 'p' a chunk of a message larger than the NATS max
// payload, 'e' the end of the side, 'h' a proxy's heartbeat (no seq). NATS
// keeps one publisher's order on a subject, so each direction is in order;
// the link seq turns any loss on the hop (a subscription over its pending
// limit, a NATS reconnect) into a visible gap, never a silent one.
//
// No buffer is unbounded and the producer never waits (relay.md §5): the
// home queues at most QueueLen messages per side (a full queue sheds the
// viewer with TRANSPORT_ERROR "fell behind", as for a local viewer); its
// drainer publishes, so a slow NATS hop blocks that drainer only; the
// proxy's NATS subscription is capped (pending limits; the per-channel
// subscriptions share one inbox of 4×(QueueLen+RingFrames) messages and
// one dispatcher goroutine) and the client's queue holds at most
// RingFrames+QueueLen (a replay and a live queue). Any
// overflow or gap on the hop ends the proxied side: a viewer is sent
// TRANSPORT_ERROR "fell behind" and resumes from the home's ring with its
// cursor; an agent is dropped and re-registers with its receive cursor. The
// client-to-home direction is paced by the client's own socket: the proxy
// publishes as it reads.
//
// # When a replica dies
//
// Proxies learn that their home is gone from its goodbye (a closing relay
// ends every proxied side with 'e') or from missing claims (PeerTimeout);
// homes drop proxied sides whose heartbeats stop. Either way the client's
// socket is dropped (a viewer gets TRANSPORT_ERROR first) and it reconnects
// through the load balancer; the first side to come back makes a new home,
// the other finds it. Nothing is lost or doubled because the endpoints hold
// the state that matters: the agent re-sends its replay buffer (as after a
// relay restart) and viewers drop output below their cursor; input is
// numbered by the home, and a new home continues from the agent's receive
// cursor (registry.attach). Lost with the dead home: input a viewer typed
// that the agent had not yet received, and the producer-closed channel kept
// for late viewers (§10.5) of channels whose home died.
//
// Two homes for one key (sides attaching at once on two replicas, or a NATS
// partition) are resolved by the claims: the older claim wins and the newer
// home closes its sides (TRANSPORT_ERROR "channel moved"), which reconnect
// to the winner.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats.go"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

const (
	subjectPrefix = "relay"

	linkMsg       = 'm'
	linkPart      = 'p'
	linkEnd       = 'e'
	linkHeartbeat = 'h'

	sidLen     = 32 // hex of 128 random bits
	linkHeader = 1 + 8

	msgMoved       = "channel moved to another relay replica; reconnect"
	msgReplicaLost = "the relay replica holding this channel is gone; reconnect"
)

// ReplicaNATSPermissions is the least privilege replica routing needs from
// the relay's NATS user, given its connection's inbox prefix
// (nats.CustomInboxPrefix; revocation.InboxPrefix for `relay serve`):
// the relay's own subjects, and the inboxes of attach requests and their
// replies. Merge them with what else the connection serves (the
// revocation watch's revocation.NATSPermissions).
func ReplicaNATSPermissions(inboxPrefix string) (publish, subscribe []string) {
	own := []string{subjectPrefix + ".>", inboxPrefix + ".>"}
	return own, own
}

// keyToken is the subject token of a channel key.
func keyToken(k routeKey) string {
	h := sha256.New()
	var port [4]byte
	binary.BigEndian.PutUint32(port[:], k.port)
	for _, p := range [][]byte{[]byte(k.ws), {0}, []byte(k.agent), {0}, port[:], []byte(k.channel)} {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func chanSubject(tok, verb string) string { return subjectPrefix + ".ch." + tok + "." + verb }

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func validID(s string) bool {
	if len(s) != sidLen {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// claim is a home's announcement: the older claim wins a contested key.
type claim struct {
	since   int64
	replica string
}

func (c claim) encode() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(c.since))
	return append(b, c.replica...)
}

func decodeClaim(b []byte) (claim, bool) {
	if len(b) != 8+sidLen {
		return claim{}, false
	}
	return claim{since: int64(binary.BigEndian.Uint64(b)), replica: string(b[8:])}, true
}

func (c claim) olderThan(o claim) bool {
	return c.since < o.since || (c.since == o.since && c.replica < o.replica)
}

// attachRequest is what a proxy asks a home (JSON on .attach).
type attachRequest struct {
	WS      string `json:"ws"`
	Agent   string `json:"agent"`
	Port    uint32 `json:"port"`
	Channel string `json:"channel,omitempty"` // the dial query's channel
	Open    []byte `json:"open"`              // the client's StreamOpen, as received
	Replica string `json:"replica"`
	Session string `json:"session"`
}

type attachReply struct {
	Accepted  bool   `json:"accepted,omitempty"`
	Reject    string `json:"reject,omitempty"`
	Retryable bool   `json:"retryable,omitempty"`
	NotHere   bool   `json:"notHere,omitempty"`
	Home      string `json:"home,omitempty"`
	Since     int64  `json:"since,omitempty"`
}

// cluster is a relay's link to its replicas (nil without Options.NATS).
type cluster struct {
	s    *Server
	nc   *nats.Conn
	id   string
	log  *slog.Logger
	down *nats.Subscription // relay.r.<id>.*

	// inbox takes the messages of every per-channel subscription (homes
	// and proxies' claim watches); one goroutine dispatches them, so a
	// channel costs no goroutine of its own. It is bounded: NATS drops
	// what does not fit, and the link seq turns that into a resume.
	inbox chan *nats.Msg

	mu       sync.Mutex
	handlers map[*nats.Subscription]func(*nats.Msg)
	homes    map[*channel]*home
	proxies  map[string]*proxyLink // sid -> a client here whose home is elsewhere
	remotes  map[string]*remoteEnd // sid -> a side of a home here whose client is elsewhere
	closed   bool
}

// home is the NATS presence of a channel this replica holds.
type home struct {
	ch    *channel
	claim claim
	mu    sync.Mutex
	subs  map[string]*nats.Subscription // key token -> relay.ch.<tok>.*
}

func newCluster(s *Server, nc *nats.Conn) (*cluster, error) {
	cl := &cluster{s: s, nc: nc, id: newID(), inbox: make(chan *nats.Msg, 4*(s.opts.QueueLen+s.opts.RingFrames)),
		handlers: map[*nats.Subscription]func(*nats.Msg){},
		homes:    map[*channel]*home{}, proxies: map[string]*proxyLink{}, remotes: map[string]*remoteEnd{}}
	cl.log = s.log.With("replica", cl.id[:8])
	sub, err := nc.Subscribe(subjectPrefix+".r."+cl.id+".*", cl.onDown)
	if err != nil {
		return nil, err
	}
	cl.limit(sub)
	cl.down = sub
	if err := nc.FlushTimeout(s.opts.HandshakeTimeout); err != nil && nc.IsConnected() {
		return nil, err
	}
	return cl, nil
}

// subscribe routes subject's messages to h through the shared inbox. The
// handler is registered before the dispatcher can look for it.
func (cl *cluster) subscribe(subject string, h func(*nats.Msg)) (*nats.Subscription, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	sub, err := cl.nc.ChanSubscribe(subject, cl.inbox)
	if err != nil {
		return nil, err
	}
	cl.handlers[sub] = h
	return sub, nil
}

func (cl *cluster) unsubscribe(sub *nats.Subscription) {
	sub.Unsubscribe()
	cl.mu.Lock()
	delete(cl.handlers, sub)
	cl.mu.Unlock()
}

// dispatch runs the handlers of inbox messages in arrival order.
func (cl *cluster) dispatch() {
	defer cl.s.wg.Done()
	for {
		select {
		case <-cl.s.ctx.Done():
			return
		case m := <-cl.inbox:
			cl.mu.Lock()
			h := cl.handlers[m.Sub]
			cl.mu.Unlock()
			if h != nil {
				h(m)
			}
		}
	}
}

// limit caps a subscription's client-side buffer; an overflow is a gap the
// link seq reports.
func (cl *cluster) limit(sub *nats.Subscription) {
	o := cl.s.opts
	sub.SetPendingLimits(4*(o.QueueLen+o.RingFrames), 64<<20)
}

// chunk is the largest payload of one link message.
func (cl *cluster) chunk() int {
	return max(int(cl.nc.MaxPayload())-64-sidLen-linkHeader, 1024)
}

// publishLink publishes payload as one or more link messages on subject,
// with the up header (sid) when sid is not empty; seq is advanced per message.
func (cl *cluster) publishLink(subject, sid string, kind byte, seq *uint64, payload []byte) error {
	chunk := cl.chunk()
	for {
		part, last := payload, true
		if len(part) > chunk {
			part, last = payload[:chunk], false
		}
		k := kind
		if !last {
			k = linkPart
		}
		b := make([]byte, 0, 1+len(sid)+8+len(part))
		b = append(b, k)
		b = append(b, sid...)
		b = binary.BigEndian.AppendUint64(b, *seq)
		b = append(b, part...)
		*seq++
		if err := cl.nc.Publish(subject, b); err != nil {
			return err
		}
		if last {
			return nil
		}
		payload = payload[chunk:]
	}
}

// reassembly collects a message split into 'p' chunks.
type reassembly struct {
	next    uint64
	partial []byte
}

var errLinkGap = errors.New("relay link: gap or oversize message")

// accept checks a link message's seq and returns the whole message once its
// last chunk arrived (nil, nil for a chunk).
func (r *reassembly) accept(kind byte, seq uint64, payload []byte) ([]byte, error) {
	if seq != r.next {
		return nil, errLinkGap
	}
	r.next++
	switch kind {
	case linkPart:
		if len(r.partial)+len(payload) > frame.MaxMessageSize {
			return nil, errLinkGap
		}
		r.partial = append(r.partial, payload...)
		return nil, nil
	case linkMsg:
		if r.partial != nil {
			payload = append(r.partial, payload...)
			r.partial = nil
		}
		return payload, nil
	}
	return nil, nil
}

// ---- home side ----

// makeHome announces ch (just created here) and starts answering for it.
func (cl *cluster) makeHome(ch *channel) {
	h := &home{ch: ch, claim: claim{since: time.Now().UnixNano(), replica: cl.id}, subs: map[string]*nats.Subscription{}}
	// Under ch.mu: either this runs before the channel's removal (which
	// then drops the home) or it sees the removal.
	ch.mu.Lock()
	cl.mu.Lock()
	ok := !cl.closed && !ch.removed
	if ok {
		cl.homes[ch] = h
	}
	cl.mu.Unlock()
	ch.mu.Unlock()
	if ok {
		cl.refreshHome(ch)
	}
}

// refreshHome subscribes a home to every key token it answers on (the
// channel id of a later agent open can add one) and announces it.
func (cl *cluster) refreshHome(ch *channel) {
	cl.mu.Lock()
	h := cl.homes[ch]
	cl.mu.Unlock()
	if h == nil {
		return
	}
	ch.mu.Lock()
	keys := []routeKey{ch.key}
	if ch.key.channel == "" && ch.descID != "" {
		alias := ch.key
		alias.channel = ch.descID
		keys = append(keys, alias)
	}
	removed := ch.removed
	ch.mu.Unlock()
	if removed {
		return
	}
	h.mu.Lock()
	var fresh []string
	for _, k := range keys {
		tok := keyToken(k)
		if h.subs == nil || h.subs[tok] != nil {
			continue
		}
		sub, err := cl.subscribe(chanSubject(tok, "*"), func(m *nats.Msg) { cl.onHome(h, tok, m) })
		if err != nil {
			cl.log.Warn("relay replica: subscribe failed", "err", err)
			continue
		}
		h.subs[tok] = sub
		fresh = append(fresh, tok)
	}
	h.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	// The server has the interest before the open is acked: a side that
	// arrives after this one (on any replica of this NATS server) finds it.
	for _, tok := range fresh {
		cl.nc.Publish(chanSubject(tok, "home"), h.claim.encode())
	}
	if err := cl.nc.FlushTimeout(cl.s.opts.HandshakeTimeout); err != nil {
		cl.log.Warn("relay replica: flush after subscribing failed", "err", err)
	}
}

// dropHome forgets ch's NATS presence; called under the registry locks.
func (cl *cluster) dropHome(ch *channel) {
	cl.mu.Lock()
	h := cl.homes[ch]
	delete(cl.homes, ch)
	cl.mu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	for _, sub := range h.subs {
		cl.unsubscribe(sub)
	}
	h.subs = nil
	h.mu.Unlock()
}

func (cl *cluster) onHome(h *home, tok string, m *nats.Msg) {
	switch m.Subject[strings.LastIndexByte(m.Subject, '.')+1:] {
	case "attach":
		cl.onAttach(h, tok, m)
	case "up":
		cl.onUp(tok, m.Data)
	case "home":
		c, ok := decodeClaim(m.Data)
		if !ok || c.replica == cl.id {
			return
		}
		if c.olderThan(h.claim) {
			cl.log.Info("relay replica: an older home holds this channel; moving its sides there")
			cl.s.reg.abdicate(h.ch)
			return
		}
		cl.nc.Publish(chanSubject(tok, "home"), h.claim.encode()) // the younger home must learn of us
	}
}

// remoteEnd is a side of a home channel whose client is on another replica.
type remoteEnd struct {
	cl       *cluster
	sid      string
	tok      string // the key token it attached through (its up subject)
	subject  string // relay.r.<replica>.<sid>
	ch       *channel
	sd       *side
	q        *outq
	viewer   bool
	lastSeen atomic.Int64
	downSeq  uint64 // the drainer's (one at a time)
	up       reassembly
	ended    atomic.Bool
}

func (cl *cluster) reply(m *nats.Msg, r attachReply) {
	b, _ := json.Marshal(r)
	m.Respond(b)
}

// onAttach attaches a proxied side to the channel of h: the token is verified
// here again and the open must resolve to this very channel.
func (cl *cluster) onAttach(h *home, tok string, m *nats.Msg) {
	s := cl.s
	var req attachRequest
	if json.Unmarshal(m.Data, &req) != nil || !validID(req.Replica) || !validID(req.Session) {
		cl.reply(m, attachReply{NotHere: true})
		return
	}
	tag, msg, err := frame.Decode(req.Open)
	if err != nil || tag != frame.TagOpen {
		cl.reply(m, attachReply{NotHere: true})
		return
	}
	open := msg.(*agentpb.StreamOpen)
	q := dialQuery{ws: req.WS, agent: req.Agent, port: req.Port, channel: req.Channel}
	viewer, reject := s.authorize(q, open)
	if reject != "" {
		s.metrics.OpensRejected.Add(1)
		cl.reply(m, attachReply{Reject: reject})
		return
	}
	isViewer := open.GetRole() == agentpb.StreamRole_STREAM_ROLE_CLIENT
	end := &remoteEnd{cl: cl, sid: req.Session, tok: tok, subject: subjectPrefix + ".r." + req.Replica + "." + req.Session, viewer: isViewer}
	end.lastSeen.Store(time.Now().UnixNano())
	a := s.newAttachReq(q, open, viewer)
	a.at = h.ch
	end.q = a.q
	at, rej := s.reg.attach(a)
	if rej != nil {
		cl.reply(m, attachReply{Reject: rej.msg, Retryable: rej.retryable, NotHere: rej.notHere})
		return
	}
	end.ch, end.sd = at.ch, at.side
	if at.final == nil {
		cl.mu.Lock()
		cl.remotes[end.sid] = end
		cl.mu.Unlock()
	}
	var perr error
	for i := 0; perr == nil && i < len(at.replay); i++ {
		perr = cl.publishLink(end.subject, "", linkMsg, &end.downSeq, at.replay[i].wire)
	}
	if at.final != nil {
		if perr == nil { // a lost final shows at the proxy as a gap in the sequence
			_ = cl.publishLink(end.subject, "", linkMsg, &end.downSeq, at.final)
		}
		cl.publishLink(end.subject, "", linkEnd, &end.downSeq, nil)
	}
	cl.reply(m, attachReply{Accepted: true, Home: cl.id, Since: h.claim.since})
	if at.final != nil {
		return
	}
	if at.side.role == agentpb.StreamRole_STREAM_ROLE_AGENT {
		cl.refreshHome(at.ch) // its channel id may be a new alias
	}
	a.q.resume(func() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			drainQueue(end.q, end.send, end.finish)
		}()
	})
}

func (e *remoteEnd) send(b []byte) error {
	return e.cl.publishLink(e.subject, "", linkMsg, &e.downSeq, b)
}

// finish ends the proxied side: the proxy drops its client, the home
// detaches the side. Runs on the drainer (the only publisher then).
func (e *remoteEnd) finish() {
	if !e.ended.CompareAndSwap(false, true) {
		return
	}
	e.cl.publishLink(e.subject, "", linkEnd, &e.downSeq, nil)
	e.cl.mu.Lock()
	if e.cl.remotes[e.sid] == e {
		delete(e.cl.remotes, e.sid)
	}
	e.cl.mu.Unlock()
	e.cl.s.reg.detach(e.ch, e.sd)
}

// fail ends a proxied side whose link lost a message (or whose proxy went
// silent): a viewer is told to resume, an agent is dropped (it re-registers).
func (e *remoteEnd) fail() {
	if e.viewer {
		e.q.finish(closeMsg(e.sd.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR, msgFellBehind))
	} else {
		e.q.finish(nil)
	}
	e.cl.s.reg.detach(e.ch, e.sd)
}

// onUp takes a proxy's message for its side here.
func (cl *cluster) onUp(tok string, b []byte) {
	if len(b) < 1+sidLen+8 {
		return
	}
	kind := b[0]
	cl.mu.Lock()
	e := cl.remotes[string(b[1:1+sidLen])]
	cl.mu.Unlock()
	if e == nil || e.tok != tok {
		return // unknown, or forged onto another channel's subject
	}
	e.lastSeen.Store(time.Now().UnixNano())
	if kind == linkHeartbeat {
		return
	}
	seq, payload := binary.BigEndian.Uint64(b[1+sidLen:]), b[1+sidLen+8:]
	if kind == linkEnd {
		e.q.finish(nil)
		cl.s.reg.detach(e.ch, e.sd)
		return
	}
	whole, err := e.up.accept(kind, seq, payload)
	if err != nil {
		cl.log.Info("relay replica: lost a message from a proxy; ending its side")
		e.fail()
		return
	}
	if whole != nil && cl.s.inbound(e.ch, e.sd, whole) {
		e.q.finish(nil) // it sent StreamClose
	}
}

// ---- proxy side ----

// proxyLink is a client on this replica whose channel's home is elsewhere.
type proxyLink struct {
	cl      *cluster
	sid     string
	tok     string
	up      string // relay.ch.<tok>.up
	q       *outq
	viewer  bool
	chanID  string
	home    claim
	homeAt  atomic.Int64 // last claim heard from the home
	down    reassembly   // the down subscription's goroutine only
	pubMu   sync.Mutex   // up publishes: the read loop, heartbeats, the end
	upSeq   uint64
	ended   bool // under pubMu
	watch   *nats.Subscription
	started atomic.Bool // the attach was accepted
}

// candidates lists the key tokens to ask, in the registry's lookup order.
func candidates(a *attachReq) []string {
	alt := a.key
	var keys []routeKey
	if a.pinned {
		alt.channel = ""
		keys = []routeKey{a.key, alt}
	} else {
		if a.channelID != "" {
			alt.channel = a.channelID
			keys = append(keys, alt)
		}
		keys = append(keys, a.key)
	}
	toks := make([]string, len(keys))
	for i, k := range keys {
		toks[i] = keyToken(k)
	}
	return toks
}

// remoteOutcome is what asking the homes gave.
type remoteOutcome int

const (
	remoteNone     remoteOutcome = iota // no home elsewhere: attach here
	remoteHandled                       // the client was served (or dropped) through a home
	remoteRejected                      // the home refused the open (reply sent)
)

// attachRemote serves c through the channel's home when one exists on any
// replica. NATS being down means no routing: the relay serves locally.
func (cl *cluster) attachRemote(c *websocket.Conn, log *slog.Logger, open *agentpb.StreamOpen, q dialQuery, a *attachReq) remoteOutcome {
	if !cl.nc.IsConnected() {
		return remoteNone
	}
	req := attachRequest{WS: q.ws, Agent: q.agent, Port: q.port, Channel: q.channel, Open: frame.MustEncode(open), Replica: cl.id}
	for _, tok := range candidates(a) {
		l := &proxyLink{cl: cl, sid: newID(), tok: tok, up: chanSubject(tok, "up"),
			q: newOutq(cl.s.opts.QueueLen + cl.s.opts.RingFrames), viewer: a.role == agentpb.StreamRole_STREAM_ROLE_CLIENT, chanID: a.channelID}
		req.Session = l.sid
		body, _ := json.Marshal(req)
		if !cl.addProxy(l) {
			return remoteNone
		}
		watch, err := cl.subscribe(chanSubject(tok, "home"), l.onClaim)
		if err != nil {
			cl.removeProxy(l)
			return remoteNone
		}
		l.watch = watch
		ctx, cancel := context.WithTimeout(cl.s.ctx, cl.s.opts.HandshakeTimeout)
		m, err := cl.nc.RequestWithContext(ctx, chanSubject(tok, "attach"), body)
		cancel()
		var rep attachReply
		if err == nil {
			err = json.Unmarshal(m.Data, &rep)
		}
		switch {
		case errors.Is(err, nats.ErrNoResponders) || (err == nil && rep.NotHere):
			l.close()
			continue
		case err != nil:
			// A home may exist but did not answer: drop the client (it
			// reconnects) rather than start a rival home.
			l.close()
			log.Info("relay replica: attach request failed", "err", err)
			return remoteHandled
		case !rep.Accepted:
			l.close()
			log.Info("stream open rejected by the channel's home replica", "reason", rep.Reject)
			cl.s.rejectWith(c, rep.Reject, rep.Retryable)
			return remoteRejected
		}
		l.home = claim{since: rep.Since, replica: rep.Home}
		l.homeAt.Store(time.Now().UnixNano())
		l.started.Store(true)
		log.Info("stream open accepted through a home replica", "home", rep.Home[:8])
		cl.s.proxySession(c, open, l)
		return remoteHandled
	}
	return remoteNone
}

func (cl *cluster) addProxy(l *proxyLink) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.closed {
		return false
	}
	cl.proxies[l.sid] = l
	return true
}

func (cl *cluster) removeProxy(l *proxyLink) {
	cl.mu.Lock()
	delete(cl.proxies, l.sid)
	cl.mu.Unlock()
}

// close tells the home the client is gone (once) and forgets the link.
func (l *proxyLink) close() {
	l.sendUp(linkEnd, nil)
	if l.watch != nil {
		l.cl.unsubscribe(l.watch)
	}
	l.cl.removeProxy(l)
}

// sendUp publishes one message toward the home; after the end, nothing.
func (l *proxyLink) sendUp(kind byte, b []byte) error {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	if l.ended {
		return errLinkGap
	}
	if kind == linkEnd {
		l.ended = true
		if !l.started.Load() {
			return nil // the home never attached this session
		}
	}
	if kind == linkHeartbeat {
		seq := uint64(0)
		return l.cl.publishLink(l.up, l.sid, kind, &seq, nil)
	}
	return l.cl.publishLink(l.up, l.sid, kind, &l.upSeq, b)
}

// drop ends the client: a viewer with a TRANSPORT_ERROR close (it resumes),
// an agent plainly (it re-registers); the home is told.
func (l *proxyLink) drop(why string) {
	if l.viewer {
		l.q.finish(closeMsg(l.chanID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR, why))
	} else {
		l.q.finish(nil)
	}
	l.sendUp(linkEnd, nil)
}

// onDown routes a home's message to its proxied client.
func (cl *cluster) onDown(m *nats.Msg) {
	sid := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	cl.mu.Lock()
	l := cl.proxies[sid]
	cl.mu.Unlock()
	if l == nil || len(m.Data) < linkHeader {
		return
	}
	kind, seq, payload := m.Data[0], binary.BigEndian.Uint64(m.Data[1:]), m.Data[linkHeader:]
	if kind == linkEnd {
		l.q.finish(nil)
		return
	}
	whole, err := l.down.accept(kind, seq, payload)
	switch {
	case err != nil:
		l.drop(msgFellBehind)
	case whole == nil:
	case len(whole) > 0 && whole[0] == byte(frame.TagClose):
		l.q.finish(whole)
	case !l.q.push(whole):
		cl.s.metrics.BufferDrops.Add(1)
		l.drop(msgFellBehind)
	}
}

// onClaim watches the home: its heartbeat, or an older home for the key.
func (l *proxyLink) onClaim(m *nats.Msg) {
	c, ok := decodeClaim(m.Data)
	if !ok || !l.started.Load() {
		return
	}
	if c.replica == l.home.replica {
		l.homeAt.Store(time.Now().UnixNano())
		return
	}
	if c.olderThan(l.home) {
		l.drop(msgMoved)
	}
}

// proxySession runs a client whose channel lives on another replica: ack,
// then its messages up to the home and the home's down to it.
func (s *Server) proxySession(c *websocket.Conn, open *agentpb.StreamOpen, l *proxyLink) {
	defer l.close()
	ack := frame.MustEncode(&agentpb.StreamOpenAck{Accepted: true, ResumeFromSeq: open.GetResumeFromSeq()})
	var drainers sync.WaitGroup
	if s.write(c, ack) == nil {
		l.q.resume(func() {
			drainers.Add(1)
			go func() {
				defer drainers.Done()
				s.drain(c, l.q)
			}()
		})
		stopPing := s.keepalive(c)
		for {
			typ, b, err := readMessage(s.ctx, c)
			if err != nil {
				break
			}
			if typ != websocket.MessageBinary {
				continue
			}
			if l.sendUp(linkMsg, b) != nil || (len(b) > 0 && b[0] == byte(frame.TagClose)) {
				break
			}
		}
		stopPing()
	}
	l.sendUp(linkEnd, nil)
	l.q.finish(nil)
	c.CloseNow()
	drainers.Wait()
}

// ---- liveness ----

// loop announces homes, sends proxy heartbeats and ends what went silent.
func (cl *cluster) loop() {
	defer cl.s.wg.Done()
	t := time.NewTicker(cl.s.opts.ReplicaHeartbeat)
	defer t.Stop()
	for {
		select {
		case <-cl.s.ctx.Done():
			return
		case <-t.C:
		}
		cl.beat(time.Now())
	}
}

func (cl *cluster) beat(now time.Time) {
	dead := now.Add(-cl.s.opts.PeerTimeout).UnixNano()
	cl.mu.Lock()
	homes := make([]*home, 0, len(cl.homes))
	for _, h := range cl.homes {
		homes = append(homes, h)
	}
	proxies := make([]*proxyLink, 0, len(cl.proxies))
	for _, l := range cl.proxies {
		proxies = append(proxies, l)
	}
	var silent []*remoteEnd
	for _, e := range cl.remotes {
		if e.lastSeen.Load() < dead {
			silent = append(silent, e)
		}
	}
	cl.mu.Unlock()
	for _, h := range homes {
		h.mu.Lock()
		for tok := range h.subs {
			cl.nc.Publish(chanSubject(tok, "home"), h.claim.encode())
		}
		h.mu.Unlock()
	}
	for _, l := range proxies {
		if !l.started.Load() {
			continue
		}
		if l.homeAt.Load() < dead {
			l.drop(msgReplicaLost)
			continue
		}
		l.sendUp(linkHeartbeat, nil)
	}
	for _, e := range silent {
		e.fail()
	}
}

// shutdown stops routing: proxied clients and remote sides were ended by
// the caller; what was published is flushed.
func (cl *cluster) shutdown() {
	cl.mu.Lock()
	cl.closed = true
	cl.mu.Unlock()
	cl.down.Unsubscribe()
	if err := cl.nc.FlushTimeout(2 * time.Second); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		cl.log.Debug("relay replica: flush at shutdown", "err", err)
	}
}
