package control

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// TerminalOptions configure OpenTerminal.
type TerminalOptions struct {
	PtyOptions
	// StreamSecret is the relay's stream-token secret (viewer ogs_ tokens).
	StreamSecret []byte
	// SessionID and ViewerID go into the viewer token; "" means random UUIDs.
	SessionID, ViewerID string
	// Mode is StreamModeControl (default: this viewer's input is taken) or
	// StreamModeView.
	Mode       string
	TokenTTL   time.Duration // 0: StreamTokenTTL
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Terminal is an interactive terminal on the machine, attached through the
// relay: output arrives on Output, input goes through Send, size changes
// through Resize (a NATS op), and Close ends the process.
type Terminal struct {
	PtyID   string
	Channel *agentpb.StreamChannel
	URL     string // the viewer URL (the token is never part of it)
	Stream  *StreamViewer

	sess *Session
}

// OpenTerminal opens a terminal on the machine (pty_open), mints a viewer
// token for its channel (epoch = the session's epoch) and attaches to it
// through the relay.
func (s *Session) OpenTerminal(ctx context.Context, o TerminalOptions) (*Terminal, error) {
	if len(o.StreamSecret) == 0 {
		return nil, errors.New("control: OpenTerminal: no stream-token secret")
	}
	r, err := s.PtyOpen(ctx, o.PtyOptions)
	if err != nil {
		return nil, err
	}
	t, err := s.AttachTerminal(ctx, r.GetPtyId(), r.GetChannel(), o)
	if err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		s.PtyClose(cctx, r.GetPtyId())
		cancel()
		return nil, err
	}
	return t, nil
}

// AttachTerminal attaches one more viewer to an open terminal.
func (s *Session) AttachTerminal(ctx context.Context, ptyID string, ch *agentpb.StreamChannel, o TerminalOptions) (*Terminal, error) {
	if ch == nil {
		return nil, fmt.Errorf("control: terminal %s has no relay channel", ptyID)
	}
	url, err := BuildStreamURL(*s.streamEndpoint(int(ch.GetPort()), ch))
	if err != nil {
		return nil, err
	}
	mode := o.Mode
	if mode == "" {
		mode = StreamModeControl
	}
	claims := StreamTokenClaims{
		WorkspaceID: s.ws, SessionID: o.SessionID, ViewerID: o.ViewerID,
		LeaseEpoch: uint64(s.epoch), Mode: mode, Port: ch.GetPort(), AgentID: s.agent,
	}
	// One viewer identity across reconnects, or the relay would count each
	// reconnect as another viewer.
	if claims.SessionID == "" {
		claims.SessionID = uuid.NewString()
	}
	if claims.ViewerID == "" {
		claims.ViewerID = uuid.NewString()
	}
	v, err := DialStream(ctx, ViewerOptions{
		URL:     url,
		Channel: ch,
		Token: func(context.Context) (string, error) {
			tok, _, err := MintViewerToken(o.StreamSecret, claims, o.TokenTTL)
			return tok, err
		},
		HTTPClient: o.HTTPClient,
		Logger:     o.Logger,
	})
	if err != nil {
		return nil, err
	}
	return &Terminal{PtyID: ptyID, Channel: ch, URL: url, Stream: v, sess: s}, nil
}

// Output delivers the terminal's output once, in order; it is closed when
// the stream ended (the process exited, or Detach/Close).
func (t *Terminal) Output() <-chan []byte { return t.Stream.Output() }

// Send types data into the terminal through the relay.
func (t *Terminal) Send(ctx context.Context, data []byte) error { return t.Stream.Send(ctx, data) }

// Resize sets the terminal size.
func (t *Terminal) Resize(ctx context.Context, cols, rows uint32) error {
	return t.sess.PtyResize(ctx, t.PtyID, cols, rows)
}

// Detach leaves the terminal running and disconnects this viewer.
func (t *Terminal) Detach() { t.Stream.Close() }

// Close ends the terminal's process and returns its exit code (-1 when it
// could not be reaped), then detaches.
func (t *Terminal) Close(ctx context.Context) (int32, error) {
	code, err := t.sess.PtyClose(ctx, t.PtyID)
	t.Stream.Close()
	return code, err
}

// WithRelay returns a copy of the session whose viewers reach streams
// through relay.
func (s *Session) WithRelay(relay RelayConfig) *Session {
	c := *s
	c.relay = relay
	return &c
}

// streamEndpoint is the endpoint of a registered channel (control.md §1.5).
func (s *Session) streamEndpoint(port int, ch *agentpb.StreamChannel) *ExposedPortEndpoint {
	channelID := ch.GetChannelId()
	if channelID == "" {
		channelID = s.ws + ":" + s.agent + ":" + strconv.Itoa(port)
	}
	tls := s.relay.TLS == nil || *s.relay.TLS
	rport := s.relay.Port
	if rport == 0 {
		rport = 80
		if tls {
			rport = 443
		}
	}
	path := s.relay.Path
	if path == "" {
		path = RelayStreamPath
	}
	protocol := "raw"
	switch ch.GetKind() {
	case agentpb.StreamKind_STREAM_KIND_PTY:
		protocol = "pty"
	case agentpb.StreamKind_STREAM_KIND_DESKTOP:
		protocol = "vnc"
	}
	return &ExposedPortEndpoint{
		Host: s.relay.Host,
		Port: rport,
		TLS:  tls,
		Path: path,
		Query: "ws=" + encodeURIComponent(s.ws) +
			"&agent=" + encodeURIComponent(s.agent) +
			"&port=" + strconv.Itoa(port) +
			"&channel=" + encodeURIComponent(channelID),
		Protocol: protocol,
	}
}
