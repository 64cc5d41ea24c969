package relay

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Rejection and close texts that clients can observe.
const (
	msgStaleEpoch    = "stale epoch (a newer sandbox is active)"
	msgReplaced      = "replaced by a newer connection of the same viewer"
	msgTooManyViewer = "fenced: too many viewers on this channel"
	msgFellBehind    = "viewer fell behind; reconnect with resume_from_seq"
	msgReaped        = "no peer attached within the pair timeout"
)

// routeKey identifies a channel. Channel is empty for the v1 key
// {ws, agent, port}; with the next revision's `channel` query it is the
// channel id (relay.md §3, §9.1).
type routeKey struct {
	ws, agent string
	port      uint32
	channel   string
}

// side is one attached connection of a channel.
type side struct {
	role      agentpb.StreamRole
	gen       uint64
	channelID string // the channel_id this side opened with (for relay-made closes)
	q         *outq
	bucket    bucket

	// Viewers only.
	viewerID  string
	control   bool
	epoch     uint64
	authority uint64
}

// channel is a LiveChannel: an optional agent, zero or more viewers, two
// directional replay rings and the epoch floors.
type channel struct {
	mu      sync.Mutex
	key     routeKey
	descID  string // channel_id of the latest agent open (or the creating open)
	agent   *side
	viewers []*side // in attach order, newest last

	toClient, toAgent *ring
	epochFloor        uint64
	authorityFloor    uint64
	lastTouch         time.Time
	// inSeq is the relay's cursor for input toward the agent: input frames are
	// stamped with one channel-wide sequence, so the agent's receive cursor
	// stays meaningful across viewer reconnects and control hand-offs.
	inSeq     uint64
	agentSeen bool // an agent has attached: inSeq is in its numbering
	removed   bool
}

// controller is the viewer whose input reaches the agent: the newest viewer
// in control mode, else the newest viewer.
func (c *channel) controller() *side {
	for i := len(c.viewers) - 1; i >= 0; i-- {
		if c.viewers[i].control {
			return c.viewers[i]
		}
	}
	if n := len(c.viewers); n > 0 {
		return c.viewers[n-1]
	}
	return nil
}

func (c *channel) dropViewer(s *side) bool {
	for i, v := range c.viewers {
		if v == s {
			n := len(c.viewers)
			copy(c.viewers[i:], c.viewers[i+1:])
			c.viewers[n-1] = nil
			c.viewers = c.viewers[:n-1]
			return true
		}
	}
	return false
}

func closeMsg(channelID string, reason agentpb.StreamCloseReason, msg string) []byte {
	return frame.MustEncode(&agentpb.StreamClose{ChannelId: channelID, Reason: reason, Message: msg})
}

// endedChannel is a channel whose producer closed it, kept for
// Options.CloseRetention so a viewer that attaches late (the process exited
// before or while it dialled) still gets the output it missed and then the
// producer's StreamClose, instead of waiting on an empty channel for a
// producer that will never come (relay.md §10.5).
type endedChannel struct {
	key                        routeKey
	descID                     string
	close                      []byte // the producer's StreamClose, as received
	toClient                   *ring  // the output ring at the close (may be nil)
	epochFloor, authorityFloor uint64
	until                      time.Time
}

// registry is the in-memory map of live channels. Lock order: registry.mu,
// then channel.mu. Frame forwarding takes only the channel's lock.
type registry struct {
	mu    sync.Mutex
	chans map[routeKey]*channel
	ended map[routeKey]*endedChannel // producer-closed channels, for late viewers
	gen   atomic.Uint64
	reaps int // reaper passes (tests)
	opts  *Options
	m     *Metrics
	// admit, when set, is consulted under mu at every attach, so an open
	// racing a revocation either sees it or is closed by closeMachine.
	admit func(ws, agent string, role agentpb.StreamRole) (reject string, retryable bool)
	// onRemove, when set, is told of every removed channel under both locks
	// (a replica's home stops answering for it).
	onRemove func(*channel)
}

func newRegistry(opts *Options, m *Metrics) *registry {
	return &registry{chans: make(map[routeKey]*channel), ended: make(map[routeKey]*endedChannel), opts: opts, m: m}
}

// attachReject is why attach refused an open.
type attachReject struct {
	msg       string
	retryable bool
	notHere   bool // at was set and the open does not resolve to it (or it is gone)
}

type attachReq struct {
	key       routeKey // channel empty unless pinned
	pinned    bool     // the dial query carried `channel`
	channelID string   // StreamOpen.channel.channel_id
	role      agentpb.StreamRole
	resume    uint64
	viewer    *token.ViewerClaims // clients only
	q         *outq
	// at, when set, is the one channel this open may attach to (a proxied
	// open that reached this replica through at's subject): never another,
	// never a new one.
	at *channel
}

// lookup finds a's entry in m. A v1 side (no `channel` query) and a pinned
// side meet when the pinned channel id equals the id the v1 side opened
// with, so v1 agents pair with viewers whose URL carries `channel`, and next
// agents with v1-query viewers. Two v1 sides share the v1 key {ws, agent,
// port} exactly as in the reference.
func lookup[T any](m map[routeKey]T, a *attachReq, descID func(T) string) (T, bool) {
	alt := a.key
	if a.pinned {
		if v, ok := m[a.key]; ok {
			return v, true
		}
		alt.channel = ""
		if v, ok := m[alt]; ok && descID(v) == a.key.channel {
			return v, true
		}
	} else {
		if a.channelID != "" {
			alt.channel = a.channelID
			if v, ok := m[alt]; ok {
				return v, true
			}
		}
		if v, ok := m[a.key]; ok {
			return v, true
		}
	}
	var zero T
	return zero, false
}

// resolve finds the channel for a, creating it if absent.
func (r *registry) resolve(a *attachReq) (*channel, bool) {
	if ch, ok := lookup(r.chans, a, func(c *channel) string { return c.descID }); ok {
		return ch, false
	}
	ch := &channel{key: a.key, descID: a.channelID}
	r.chans[a.key] = ch
	r.m.LiveChannels.Add(1)
	return ch, true
}

// endedFor finds the producer-closed channel a viewer's open resolves to,
// when no live channel does; r.mu is held. An expired one is forgotten.
func (r *registry) endedFor(a *attachReq, now time.Time) *endedChannel {
	if _, live := lookup(r.chans, a, func(c *channel) string { return c.descID }); live {
		return nil
	}
	e, ok := lookup(r.ended, a, func(e *endedChannel) string { return e.descID })
	if !ok {
		return nil
	}
	if now.After(e.until) {
		r.forgetEnded(e)
		return nil
	}
	return e
}

// forgetEnded deletes e; r.mu is held.
func (r *registry) forgetEnded(e *endedChannel) {
	if r.ended[e.key] == e {
		delete(r.ended, e.key)
	}
}

// forgetEndedFor drops what an attaching producer supersedes: the ended
// channel at its key and at its channel id; r.mu is held.
func (r *registry) forgetEndedFor(a *attachReq) {
	delete(r.ended, a.key)
	if a.channelID != "" {
		alt := a.key
		alt.channel = a.channelID
		delete(r.ended, alt)
	}
}

// retainEnded keeps ch's output ring, floors and the producer's close for
// late viewers; both locks are held, before removeLocked.
func (r *registry) retainEnded(ch *channel, wire []byte, now time.Time) {
	r.ended[ch.key] = &endedChannel{
		key: ch.key, descID: ch.descID, close: wire, toClient: ch.toClient,
		epochFloor: ch.epochFloor, authorityFloor: ch.authorityFloor,
		until: now.Add(r.opts.CloseRetention),
	}
}

// staleViewer is the viewer epoch fence: v is older than a floor.
func staleViewer(v *token.ViewerClaims, epochFloor, authorityFloor uint64) bool {
	return v.LeaseEpoch < epochFloor || (v.AuthorityEpoch > 0 && v.AuthorityEpoch < authorityFloor)
}

// attachment is what attach gives an accepted open: the channel, the new
// side and the frames to replay, or, for a viewer of a channel its producer
// already closed, only the replay and that close (final): there is no side.
type attachment struct {
	ch      *channel
	side    *side
	replay  []ringEntry
	final   []byte
	created bool // the channel was created by this attach
}

// attach adds a side, or answers a late viewer of an ended channel. It
// returns a rejection for a revoked machine or a stale epoch.
func (r *registry) attach(a *attachReq) (attachment, *attachReject) {
	now := r.opts.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.admit != nil {
		if msg, retry := r.admit(a.key.ws, a.key.agent, a.role); msg != "" {
			r.m.OpensRejected.Add(1)
			return attachment{}, &attachReject{msg: msg, retryable: retry}
		}
	}
	if a.at != nil {
		if ch, ok := lookup(r.chans, a, func(c *channel) string { return c.descID }); !ok || ch != a.at {
			return attachment{}, &attachReject{msg: "channel not here", retryable: true, notHere: true}
		}
	} else if a.role == agentpb.StreamRole_STREAM_ROLE_CLIENT {
		if e := r.endedFor(a, now); e != nil {
			if staleViewer(a.viewer, e.epochFloor, e.authorityFloor) {
				r.m.OpensRejected.Add(1)
				return attachment{}, &attachReject{msg: msgStaleEpoch}
			}
			r.m.OpensAccepted.Add(1)
			var replay []ringEntry
			if e.toClient != nil {
				replay = e.toClient.since(a.resume)
			}
			return attachment{replay: replay, final: e.close}, nil
		}
	} else {
		r.forgetEndedFor(a)
	}
	ch, created := r.resolve(a)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.lastTouch = now

	s := &side{
		role:      a.role,
		gen:       r.gen.Add(1),
		channelID: a.channelID,
		q:         a.q,
		bucket:    newBucket(r.opts.RateBurstBytes, r.opts.RateBytesPerSec, now),
	}
	var replay []ringEntry
	replaced := false
	if a.role == agentpb.StreamRole_STREAM_ROLE_CLIENT {
		v := a.viewer
		if staleViewer(v, ch.epochFloor, ch.authorityFloor) {
			r.m.OpensRejected.Add(1)
			if created {
				r.removeLocked(ch)
			}
			return attachment{}, &attachReject{msg: msgStaleEpoch}
		}
		ch.epochFloor = max(ch.epochFloor, v.LeaseEpoch)
		if v.AuthorityEpoch > 0 {
			ch.authorityFloor = max(ch.authorityFloor, v.AuthorityEpoch)
		}
		s.viewerID, s.control, s.epoch, s.authority = v.ViewerID, v.Mode == token.ModeControl, v.LeaseEpoch, v.AuthorityEpoch
		kept := ch.viewers[:0]
		for _, old := range ch.viewers {
			switch {
			case old.epoch < ch.epochFloor || (old.authority > 0 && old.authority < ch.authorityFloor):
				old.q.finish(closeMsg(old.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED, msgStaleEpoch))
			case old.viewerID == s.viewerID:
				old.q.finish(closeMsg(old.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED, msgReplaced))
				replaced = true
			default:
				kept = append(kept, old)
			}
		}
		clear(ch.viewers[len(kept):])
		ch.viewers = kept
		for len(ch.viewers) >= r.opts.MaxViewers {
			old := ch.viewers[0]
			old.q.finish(closeMsg(old.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED, msgTooManyViewer))
			ch.dropViewer(old)
		}
		ch.viewers = append(ch.viewers, s)
		if ch.toClient != nil {
			replay = ch.toClient.since(a.resume)
		}
	} else {
		if ch.agent != nil {
			ch.agent.q.finish(nil) // a replaced agent is dropped, never told to close (it would end its PTY)
			replaced = true
		}
		ch.agent = s
		if !ch.agentSeen {
			// This channel's input numbering began here (the relay restarted,
			// or the channel was recreated) and means nothing to the agent,
			// whose receive cursor counts an older numbering: continue from
			// its cursor, so input typed before it (re)attached is replayed
			// and none of it looks already consumed.
			ch.agentSeen = true
			if a.resume > 0 {
				if ch.toAgent != nil {
					ch.toAgent.shift(a.resume)
				}
				ch.inSeq += a.resume
			}
		}
		if a.channelID != "" {
			ch.descID = a.channelID
		}
		if ch.toAgent != nil {
			replay = ch.toAgent.since(a.resume)
		}
	}
	if replaced {
		r.m.Reconnects.Add(1)
	}
	r.m.OpensAccepted.Add(1)
	return attachment{ch: ch, side: s, replay: replay, created: created}, nil
}

// hasLocal reports whether a resolves to a channel (or, for a viewer, a
// producer-closed channel) in this process.
func (r *registry) hasLocal(a *attachReq) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := lookup(r.chans, a, func(c *channel) string { return c.descID }); ok {
		return true
	}
	return a.role == agentpb.StreamRole_STREAM_ROLE_CLIENT && r.endedFor(a, r.opts.Now()) != nil
}

// detach removes s if it is still the live side (generation-safe: a late
// teardown of a replaced connection does nothing). A channel left with no
// side at all is removed.
func (r *registry) detach(ch *channel, s *side) {
	if !r.lockLive(ch) {
		return
	}
	defer r.unlockBoth(ch)
	if ch.agent == s {
		ch.agent = nil
	} else if !ch.dropViewer(s) {
		return
	}
	if ch.agent == nil && len(ch.viewers) == 0 {
		r.removeLocked(ch)
	}
}

// lockLive takes r.mu and ch.mu and reports true, unless ch is already
// removed (then nothing is held).
func (r *registry) lockLive(ch *channel) bool {
	r.mu.Lock()
	ch.mu.Lock()
	if ch.removed {
		ch.mu.Unlock()
		r.mu.Unlock()
		return false
	}
	return true
}

func (r *registry) unlockBoth(ch *channel) {
	ch.mu.Unlock()
	r.mu.Unlock()
}

// removeLocked deletes ch; both locks are held. Remaining sides must be
// finished by the caller (or already are).
func (r *registry) removeLocked(ch *channel) {
	if ch.removed {
		return
	}
	ch.removed = true
	if r.chans[ch.key] == ch {
		delete(r.chans, ch.key)
	}
	r.m.LiveChannels.Add(-1)
	ch.toClient, ch.toAgent = nil, nil
	if r.onRemove != nil {
		r.onRemove(ch)
	}
}

// closeFrom handles a StreamClose sent by s: forwarded to the peer, then the
// channel is removed. A viewer closing while other viewers still watch only
// detaches itself. A producer's close is also kept for late viewers.
func (r *registry) closeFrom(ch *channel, s *side, wire []byte) {
	if !r.lockLive(ch) {
		return
	}
	defer r.unlockBoth(ch)
	if s.role == agentpb.StreamRole_STREAM_ROLE_CLIENT {
		if !ch.dropViewer(s) {
			return
		}
		if len(ch.viewers) > 0 {
			return
		}
		if ch.agent != nil {
			ch.agent.q.finish(wire)
		}
	} else {
		if ch.agent != s {
			return
		}
		for _, v := range ch.viewers {
			v.q.finish(wire)
		}
		// A viewer may still be on its way (it dialled after pty_open
		// answered, the process was quicker): it must learn the end too.
		r.retainEnded(ch, wire, r.opts.Now())
	}
	ch.agent, ch.viewers = nil, nil
	r.removeLocked(ch)
}

// fromAgent forwards an agent StreamFrame: rate limit, ring, every viewer's queue.
func (r *registry) fromAgent(ch *channel, s *side, f frame.FrameInfo, wire []byte) {
	now := r.opts.Now()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed || ch.agent != s {
		r.m.RateLimitDrops.Add(1)
		return
	}
	ch.lastTouch = now
	if !s.bucket.admit(f.DataLen, now) {
		r.m.RateLimitDrops.Add(1)
		return
	}
	if ch.toClient == nil {
		ch.toClient = newRing(r.opts.RingFrames)
	}
	r.m.ObserveDepth(ch.toClient.push(ringEntry{seq: f.Seq, wire: wire}))
	n := uint64(f.DataLen)
	for i := 0; i < len(ch.viewers); i++ {
		v := ch.viewers[i]
		if v.q.push(wire) {
			r.m.BytesAgentToViewer.Add(n)
			r.m.FramesSpliced.Add(1)
			continue
		}
		// A full queue: the frame is shed for this viewer (it stays in the
		// ring) and the viewer is told to reconnect and resume rather than
		// silently missing bytes. The producer never waits.
		r.m.BufferDrops.Add(1)
		v.q.finish(closeMsg(v.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR, msgFellBehind))
		ch.dropViewer(v)
		i--
	}
}

// fromViewer forwards a viewer StreamFrame to the agent. Only the
// controlling viewer's input is taken; it is stamped with the channel's
// input sequence.
func (r *registry) fromViewer(ch *channel, s *side, f *agentpb.StreamFrame) {
	now := r.opts.Now()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed {
		r.m.RateLimitDrops.Add(1)
		return
	}
	ch.lastTouch = now
	if ch.controller() != s {
		return // a read-only viewer, or one already replaced
	}
	if !s.bucket.admit(len(f.Data), now) {
		r.m.RateLimitDrops.Add(1)
		return
	}
	f.Seq = ch.inSeq
	ch.inSeq++
	wire := frame.MustEncode(f)
	if ch.toAgent == nil {
		ch.toAgent = newRing(r.opts.RingFrames)
	}
	r.m.ObserveDepth(ch.toAgent.push(ringEntry{seq: f.Seq, wire: wire}))
	if ch.agent == nil {
		return
	}
	if ch.agent.q.push(wire) {
		r.m.BytesViewerToAgent.Add(uint64(len(f.Data)))
		r.m.FramesSpliced.Add(1)
	} else {
		r.m.BufferDrops.Add(1)
	}
}

// desktopInput forwards a DesktopInput unchanged to the peer: agent → every
// viewer, controlling viewer → agent. Never rate-limited, ringed or counted.
func (r *registry) desktopInput(ch *channel, s *side, wire []byte) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.removed {
		return
	}
	if s.role == agentpb.StreamRole_STREAM_ROLE_AGENT {
		if ch.agent != s {
			return
		}
		for _, v := range ch.viewers {
			v.q.push(wire)
		}
		return
	}
	if ch.agent != nil && ch.controller() == s {
		ch.agent.q.push(wire)
	}
}

// reap removes every channel lacking a side whose last touch is older than
// the pair timeout; the remaining side is sent a StreamClose first.
func (r *registry) reap(now time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reaps++
	for k, e := range r.ended {
		if now.After(e.until) {
			delete(r.ended, k)
		}
	}
	n := 0
	for _, ch := range r.chans {
		ch.mu.Lock()
		if (ch.agent == nil || len(ch.viewers) == 0) && now.Sub(ch.lastTouch) > r.opts.PairTimeout {
			r.endLocked(ch, func(s *side) []byte {
				return closeMsg(s.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR, msgReaped)
			})
			n++
		}
		ch.mu.Unlock()
	}
	return n
}

// closeMachine closes every channel of machine (ws, agent): each side is
// sent a StreamClose with reason and msg, then dropped. It returns the
// number of channels closed.
func (r *registry) closeMachine(ws, agent string, reason agentpb.StreamCloseReason, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.ended {
		if k.ws == ws && k.agent == agent {
			delete(r.ended, k)
		}
	}
	n := 0
	for k, ch := range r.chans {
		if k.ws != ws || k.agent != agent {
			continue
		}
		ch.mu.Lock()
		r.endLocked(ch, func(s *side) []byte { return closeMsg(s.channelID, reason, msg) })
		ch.mu.Unlock()
		n++
	}
	return n
}

// endLocked finishes every side of ch with final(side) as its last message
// and removes ch; both locks are held.
func (r *registry) endLocked(ch *channel, final func(*side) []byte) {
	for _, s := range append(ch.viewers, ch.agent) {
		if s != nil {
			s.q.finish(final(s))
		}
	}
	ch.agent, ch.viewers = nil, nil
	r.removeLocked(ch)
}

// abdicate gives ch up to an older home on another replica: viewers are
// told to reconnect (TRANSPORT_ERROR), the agent is dropped (it
// re-registers); both land on the winner.
func (r *registry) abdicate(ch *channel) {
	if !r.lockLive(ch) {
		return
	}
	defer r.unlockBoth(ch)
	r.endLocked(ch, func(s *side) []byte {
		if s.role == agentpb.StreamRole_STREAM_ROLE_AGENT {
			return nil
		}
		return closeMsg(s.channelID, agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR, msgMoved)
	})
}

// shutdown drops every side (no StreamClose: clients reconnect to a new relay).
func (r *registry) shutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.ended)
	for _, ch := range r.chans {
		ch.mu.Lock()
		r.endLocked(ch, func(*side) []byte { return nil })
		ch.mu.Unlock()
	}
}

// paired reports whether the channel at key has an agent and a viewer (tests).
func (r *registry) paired(k routeKey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := r.chans[k]
	if ch == nil {
		return false
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.agent != nil && len(ch.viewers) > 0
}

func (r *registry) reapCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reaps
}

func (r *registry) endedLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ended)
}
