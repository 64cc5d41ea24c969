// Package stream is the agent's relay client (relay.md §7, §9.3–9.4, §10):
// it registers one stream channel (a PTY or a desktop) with the relay as the
// producer (role AGENT) and keeps it alive across relay reconnects and relay
// restarts for as long as its owner wants it.
//
// A Channel carries two cursors. The send cursor stamps outbound frames
// 0, 1, 2, ...; it is never moved back. Sent frames stay in a bounded replay
// buffer and are written again after every reconnect, so a relay that lost
// its ring (a restart) gets back every recent frame; viewers drop the
// duplicates by seq (relay.md §9.6). The receive cursor is the next inbound
// seq not yet handed to the owner; it is presented as resume_from_seq, so
// the relay replays exactly the input the agent has not consumed, and an
// inbound frame below it is dropped, so replayed input never runs twice.
//
// Only Close ends a channel: transport errors, relay drops, StreamCloses from
// the relay or a departing viewer and even rejected re-opens are retried
// with the module's backoff. A connection's late errors cannot disturb its
// successor (each connection has its own generation and teardown).
package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/quartz"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/relayclient"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Well-known logical ports (relay.md §7).
const (
	PortPTY     uint32 = 7681
	PortDesktop uint32 = 6080
)

// Defaults applied to a zero Dialer field.
const (
	DefaultSendQueue        = 256
	DefaultRecvQueue        = 256
	DefaultReplayBytes      = 2 << 20
	DefaultReplayFrames     = 1024
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultCloseGrace       = 5 * time.Second
)

// Errors.
var (
	// ErrClosed is returned by Send and Flush once the channel is closing or closed.
	ErrClosed = errors.New("stream: channel closed")
	// ErrNotConfigured is returned by Open when the dialer has no relay URL or token.
	ErrNotConfigured = errors.New("stream: no relay configured")
)

// RejectedError is a StreamOpenAck{accepted:false}. It is terminal for Open;
// a rejected re-open of a live channel is retried with backoff.
type RejectedError = relayclient.RejectedError

// ProtocolError is a first answer that is not an OpenAck.
type ProtocolError = relayclient.ProtocolError

// Dialer opens relay channels for one enrolled agent. RelayURL, Token,
// WorkspaceID and AgentID come from the enrollment credentials; the other
// fields are optional tuning (zero means the default). A Dialer must not be
// changed after its first Open.
type Dialer struct {
	// RelayURL is the dial base, e.g. wss://relay.example.com/stream.
	RelayURL string
	// Token is the agent's ogr_ relay token, sent in-band in StreamOpen.
	Token string
	// TokenFunc, when set, is called before every (re)connect and wins over
	// Token, so a re-minted token reaches long-lived channels.
	TokenFunc   func() string
	WorkspaceID string
	AgentID     string
	Logger      *slog.Logger

	SendQueue        int           // frames Send may queue before it blocks
	RecvQueue        int           // inbound frames buffered for the owner
	ReplayBytes      int           // bytes of sent frames kept for resend after a reconnect
	ReplayFrames     int           // frames kept for resend after a reconnect
	HandshakeTimeout time.Duration // dial + StreamOpen + ack
	WriteTimeout     time.Duration // one message write; a stuck relay is reconnected
	PingInterval     time.Duration // keepalive toward the relay; negative disables
	CloseGrace       time.Duration // how long Close tries to deliver what is queued and the StreamClose
	Backoff          backoff.Policy
	HTTPClient       *http.Client
	Now              func() time.Time // produced_at_ms; nil means Clock.Now
	// Clock times the keepalive pings and the reconnect backoff; nil is the
	// real clock (tests pass a quartz.Mock and advance it).
	Clock quartz.Clock
}

// Configured reports whether the dialer can reach a relay.
func (d *Dialer) Configured() bool {
	return d != nil && d.RelayURL != "" && (d.Token != "" || d.TokenFunc != nil)
}

var idCounter atomic.Uint64

// NewChannelID returns "ch-<unix-nanos hex>-<process counter hex>" (relay.md §7).
func NewChannelID() string {
	return fmt.Sprintf("ch-%x-%x", time.Now().UnixNano(), idCounter.Add(1))
}

// DialURL is relay_url + ('&' if it already has a query, else '?') +
// ws=…&agent=…&port=…&channel=… (the next-revision key query, relay.md §9.1;
// a v1 relay ignores the extra parameter). Values are query-escaped, which
// leaves the UUIDs and channel ids of real deployments unchanged.
func DialURL(base string, key *agentpb.StreamChannel) string {
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return fmt.Sprintf("%s%sws=%s&agent=%s&port=%d&channel=%s", base, sep,
		url.QueryEscape(key.GetWorkspaceId()), url.QueryEscape(key.GetAgentId()), key.GetPort(),
		url.QueryEscape(key.GetChannelId()))
}

// Open registers a new channel of kind on the logical port and returns once
// the relay has accepted the first StreamOpen. Transport failures are
// retried with backoff until ctx ends; a rejected open is returned at once
// as a *RejectedError. ctx bounds only the first registration: the channel
// then lives until Close.
func (d *Dialer) Open(ctx context.Context, kind agentpb.StreamKind, port uint32) (*Channel, error) {
	if !d.Configured() {
		return nil, ErrNotConfigured
	}
	c := newChannel(d, &agentpb.StreamChannel{
		ChannelId:   NewChannelID(),
		WorkspaceId: d.WorkspaceID,
		AgentId:     d.AgentID,
		Kind:        kind,
		Port:        port,
	})
	for {
		cn, err := c.connect(ctx)
		if err == nil {
			c.bo.Reset()
			go c.run(cn)
			return c, nil
		}
		if relayclient.IsRefusal(err) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("relay stream: %w (last error: %v)", ctx.Err(), err)
		}
		c.log.Debug("relay dial failed; retrying", "err", err)
		if c.bo.Sleep(ctx) != nil {
			return nil, fmt.Errorf("relay stream: %w (last error: %v)", ctx.Err(), err)
		}
	}
}

// connect dials the relay and performs the handshake, presenting the receive
// cursor as resume_from_seq. It returns a live connection with its reader
// started.
func (c *Channel) connect(ctx context.Context) (*conn, error) {
	hctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	defer cancel()
	tok := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		tok = c.cfg.TokenFunc()
	}
	resume := c.recvNext
	open := &agentpb.StreamOpen{Channel: c.desc, Token: tok, Role: agentpb.StreamRole_STREAM_ROLE_AGENT, ResumeFromSeq: resume}
	ws, ack, err := relayclient.Open(hctx, c.url, c.cfg.HTTPClient, open)
	if err != nil {
		return nil, fmt.Errorf("relay stream: %w", err)
	}
	// The ack's resume_from_seq is the relay's echo of ours (relay.md §4):
	// the send cursor is never moved by it (§9.3) and the receive cursor
	// already equals it.
	if ack.GetResumeFromSeq() != resume {
		c.log.Debug("relay ack resume differs from the presented cursor", "presented", resume, "ack", ack.GetResumeFromSeq())
	}
	gen := c.gen.Add(1)
	cn := newConn(c, ws, gen, resume)
	return cn, nil
}

func (d *Dialer) resolved() Dialer {
	cfg := *d
	if cfg.SendQueue <= 0 {
		cfg.SendQueue = DefaultSendQueue
	}
	if cfg.RecvQueue <= 0 {
		cfg.RecvQueue = DefaultRecvQueue
	}
	if cfg.ReplayBytes <= 0 {
		cfg.ReplayBytes = DefaultReplayBytes
	}
	if cfg.ReplayFrames <= 0 {
		cfg.ReplayFrames = DefaultReplayFrames
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.CloseGrace <= 0 {
		cfg.CloseGrace = DefaultCloseGrace
	}
	if cfg.Backoff == (backoff.Policy{}) {
		cfg.Backoff = backoff.Exponential(500*time.Millisecond, 30*time.Second)
	}
	if cfg.Clock == nil {
		cfg.Clock = quartz.NewReal()
	}
	if cfg.Now == nil {
		clk := cfg.Clock
		cfg.Now = func() time.Time { return clk.Now() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return cfg
}
