package control

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/opengeni/opengeni-agent/relay/token"
)

// EnvStreamSecret names the relay's stream-token (viewer) secret in the
// environment of the relay and of tools that mint viewer tokens.
const EnvStreamSecret = "OPENGENI_STREAM_TOKEN_SECRET"

// StreamTokenTTL is the default viewer token lifetime
// (STREAM_TOKEN_DEFAULT_TTL_SECONDS).
const StreamTokenTTL = token.ViewerTTL

// Viewer token modes: a "view" viewer watches; the newest "control" viewer's
// input reaches the machine (a lone viewer's input does in either mode).
const (
	StreamModeView    = token.ModeView
	StreamModeControl = token.ModeControl
)

// StreamTokenClaims are what a viewer's ogs_ token grants (control.md §7).
type StreamTokenClaims struct {
	WorkspaceID string // must equal the channel's workspace
	SessionID   string // "" : a random UUID
	ViewerID    string // "" : a random UUID; a non-UUID is mapped by StreamViewerID
	// LeaseEpoch is the fence: for a machine stream, the session's epoch.
	// The relay rejects a viewer whose epoch is below the highest it has
	// accepted on the channel.
	LeaseEpoch uint64
	Mode       string // StreamModeView (default) or StreamModeControl
	Port       uint32 // the channel's logical port; 0 means 6080
	// AgentID scopes the token to one machine: the relay refuses it on any
	// other machine's channel. "" mints a workspace-wide token (the
	// reference's; relays that predate the scope ignore the claim).
	AgentID string
}

// MintViewerToken signs an ogs_ viewer token under the relay's stream-token
// secret, valid for ttl (0: StreamTokenTTL), and returns it with its expiry.
// The token travels in-band in StreamOpen, never in a URL.
func MintViewerToken(secret []byte, c StreamTokenClaims, ttl time.Duration) (string, time.Time, error) {
	if len(secret) == 0 {
		return "", time.Time{}, errors.New("control: MintViewerToken: no stream-token secret")
	}
	if c.WorkspaceID == "" {
		return "", time.Time{}, errors.New("control: MintViewerToken: WorkspaceID is required")
	}
	if ttl <= 0 {
		ttl = StreamTokenTTL
	}
	if c.SessionID == "" {
		c.SessionID = uuid.NewString()
	}
	if c.ViewerID == "" {
		c.ViewerID = uuid.NewString()
	}
	now := time.Now()
	exp := now.Add(ttl).Truncate(time.Second)
	tok, err := token.MintViewer(string(secret), token.ViewerClaims{
		WorkspaceID: c.WorkspaceID,
		SessionID:   c.SessionID,
		ViewerID:    StreamViewerID(c.ViewerID),
		LeaseEpoch:  c.LeaseEpoch,
		Mode:        c.Mode,
		Port:        c.Port,
		Exp:         exp.Unix(),
		AgentID:     c.AgentID,
	}, now)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("control: MintViewerToken: %w", err)
	}
	return tok, exp, nil
}

// StreamViewerID returns raw when it is a UUID, else the deterministic UUID
// the reference derives from it (control.md §7): the first 32 hex digits of
// sha256("opengeni:stream-viewer:" + raw), version digit 5, variant 8-b.
func StreamViewerID(raw string) string {
	if _, err := uuid.Parse(raw); err == nil && len(raw) == 36 {
		return raw
	}
	sum := sha256.Sum256([]byte("opengeni:stream-viewer:" + raw))
	h := []byte(hex.EncodeToString(sum[:])[:32])
	h[12] = '5'
	d := h[16]
	var n byte
	if d >= 'a' {
		n = d - 'a' + 10
	} else {
		n = d - '0'
	}
	h[16] = "0123456789abcdef"[(n&3)|8]
	s := string(h)
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}
