// Package token mints and verifies the relay's HMAC tokens: the viewer
// stream token (prefix "ogs_") and the agent relay producer token (prefix
// "ogr_"), byte-compatible with the OpenGeni TypeScript control plane and the
// Rust reference relay (spec relay.md §2, control.md §7).
//
// Envelope, for both prefixes:
//
//	token     = prefix + payload + "." + signature
//	payload   = base64url_nopad(JSON(claims))        // keys in schema order, no whitespace
//	signature = base64url_nopad(HMAC-SHA256(key = UTF-8(secret), msg = ASCII(payload)))
//
// Verification order is prefix → structure → signature → claims → expiry,
// and each failure is one of the exported sentinel errors, matchable with
// errors.Is. The error strings are part of the relay's wire behaviour (they
// appear inside rejected StreamOpenAck messages) and must not change.
package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Token prefixes.
const (
	// ViewerPrefix starts a viewer stream token (TS signStreamToken).
	ViewerPrefix = "ogs_"
	// AgentPrefix starts an agent relay producer token (TS signRelayToken).
	AgentPrefix = "ogr_"
)

// Default lifetimes applied at mint when the claims carry no exp.
const (
	// ViewerTTL is STREAM_TOKEN_DEFAULT_TTL_SECONDS.
	ViewerTTL = 120 * time.Second
	// AgentTTL is RELAY_TOKEN_TTL_SECONDS (30 days).
	AgentTTL = 30 * 24 * time.Hour
	// DefaultViewerPort is the port a viewer token carries when none is given.
	DefaultViewerPort = 6080
)

// Viewer token modes.
const (
	ModeView    = "view"
	ModeControl = "control"
)

// Verification errors. Their texts are the reference relay's and appear on
// the wire inside rejected acks ("viewer token: token is expired").
var (
	ErrBadPrefix    = errors.New("token has the wrong prefix")
	ErrMalformed    = errors.New("token is malformed")
	ErrBadSignature = errors.New("token signature is invalid")
	ErrBadClaims    = errors.New("token claims are invalid")
	ErrExpired      = errors.New("token is expired")
)

// ErrInvalidMint reports claims the TS schema would refuse to mint.
var ErrInvalidMint = errors.New("token: claims cannot be minted")

var b64 = base64.RawURLEncoding

// ViewerClaims are the claims of an "ogs_" token, in their JSON key order.
// SubjectID and AuthorityEpoch are the optional additions of the next
// protocol revision (relay.md §9.2); they are omitted from the JSON when zero.
// AgentID is our optional addition: it scopes the token to one machine (the
// relay refuses it on any other agent's channel). Without it the token is
// workspace-wide, as in the reference; tokens minted without it are byte
// for byte the reference's.
type ViewerClaims struct {
	WorkspaceID string `json:"workspaceId"`
	SessionID   string `json:"sessionId"`
	ViewerID    string `json:"viewerId"`
	LeaseEpoch  uint64 `json:"leaseEpoch"`
	Mode        string `json:"mode"`
	Port        uint32 `json:"port"`
	Exp         int64  `json:"exp"`

	SubjectID      string `json:"subjectId,omitempty"`
	AuthorityEpoch uint64 `json:"authorityEpoch,omitempty"`
	AgentID        string `json:"agentId,omitempty"`
}

// AgentClaims are the claims of an "ogr_" token, in their JSON key order.
type AgentClaims struct {
	WorkspaceID string `json:"workspaceId"`
	AgentID     string `json:"agentId"`
	Exp         int64  `json:"exp"`
	// CredentialGeneration is the enrollment's credential generation at
	// mint time (control.md §9, absent = 1; set only above 1, so a first
	// generation token is byte-equal to the reference mint). A relay that
	// follows enrollments refuses a token of an older generation.
	CredentialGeneration int `json:"credentialGeneration,omitempty"`
}

// Generation is the token's credential generation (absent = 1).
func (c AgentClaims) Generation() int { return max(c.CredentialGeneration, 1) }

// MintViewer signs an "ogs_" token. Zero values get the TS mint defaults:
// Mode "view", Port 6080, Exp now+ViewerTTL.
func MintViewer(secret string, c ViewerClaims, now time.Time) (string, error) {
	if c.Mode == "" {
		c.Mode = ModeView
	}
	if c.Port == 0 {
		c.Port = DefaultViewerPort
	}
	if c.Exp == 0 {
		c.Exp = now.Add(ViewerTTL).Unix()
	}
	switch {
	case c.Mode != ModeView && c.Mode != ModeControl:
		return "", fmt.Errorf("%w: mode %q is not view or control", ErrInvalidMint, c.Mode)
	case c.Exp <= 0:
		return "", fmt.Errorf("%w: exp must be positive", ErrInvalidMint)
	case len(c.SubjectID) > 512:
		return "", fmt.Errorf("%w: subjectId longer than 512", ErrInvalidMint)
	case len(c.AgentID) > 512:
		return "", fmt.Errorf("%w: agentId longer than 512", ErrInvalidMint)
	}
	return Mint(ViewerPrefix, secret, c)
}

// MintAgent signs an "ogr_" token. A zero Exp becomes now+AgentTTL.
func MintAgent(secret string, c AgentClaims, now time.Time) (string, error) {
	if c.Exp == 0 {
		c.Exp = now.Add(AgentTTL).Unix()
	}
	if c.Exp <= 0 {
		return "", fmt.Errorf("%w: exp must be positive", ErrInvalidMint)
	}
	if c.CredentialGeneration <= 1 {
		c.CredentialGeneration = 0 // absent: the reference's first-generation shape
	}
	return Mint(AgentPrefix, secret, c)
}

// VerifyViewer checks an "ogs_" token under secret at now and returns its claims.
func VerifyViewer(secret, tok string, now time.Time) (ViewerClaims, error) {
	var w struct {
		WorkspaceID    *string `json:"workspaceId"`
		SessionID      *string `json:"sessionId"`
		ViewerID       *string `json:"viewerId"`
		LeaseEpoch     *uint64 `json:"leaseEpoch"`
		Mode           *string `json:"mode"`
		Port           *uint32 `json:"port"`
		Exp            *int64  `json:"exp"`
		SubjectID      *string `json:"subjectId"`
		AuthorityEpoch *uint64 `json:"authorityEpoch"`
		AgentID        *string `json:"agentId"`
	}
	if err := Verify(ViewerPrefix, secret, tok, &w); err != nil {
		return ViewerClaims{}, err
	}
	if w.WorkspaceID == nil || w.SessionID == nil || w.ViewerID == nil || w.LeaseEpoch == nil ||
		w.Mode == nil || w.Port == nil || w.Exp == nil {
		return ViewerClaims{}, ErrBadClaims
	}
	c := ViewerClaims{
		WorkspaceID: *w.WorkspaceID, SessionID: *w.SessionID, ViewerID: *w.ViewerID,
		LeaseEpoch: *w.LeaseEpoch, Mode: *w.Mode, Port: *w.Port, Exp: *w.Exp,
	}
	if w.SubjectID != nil {
		c.SubjectID = *w.SubjectID
	}
	if w.AuthorityEpoch != nil {
		c.AuthorityEpoch = *w.AuthorityEpoch
	}
	if w.AgentID != nil {
		c.AgentID = *w.AgentID
	}
	if c.Exp < now.Unix() {
		return ViewerClaims{}, ErrExpired
	}
	return c, nil
}

// VerifyAgent checks an "ogr_" token under secret at now and returns its claims.
func VerifyAgent(secret, tok string, now time.Time) (AgentClaims, error) {
	var w struct {
		WorkspaceID          *string `json:"workspaceId"`
		AgentID              *string `json:"agentId"`
		Exp                  *int64  `json:"exp"`
		CredentialGeneration int     `json:"credentialGeneration"`
	}
	if err := Verify(AgentPrefix, secret, tok, &w); err != nil {
		return AgentClaims{}, err
	}
	if w.WorkspaceID == nil || w.AgentID == nil || w.Exp == nil {
		return AgentClaims{}, ErrBadClaims
	}
	c := AgentClaims{WorkspaceID: *w.WorkspaceID, AgentID: *w.AgentID, Exp: *w.Exp, CredentialGeneration: w.CredentialGeneration}
	if c.Exp < now.Unix() {
		return AgentClaims{}, ErrExpired
	}
	return c, nil
}

// Mint signs claims into prefix + payload + "." + signature: the shared HMAC
// envelope of control.md §7, used by MintViewer and MintAgent and by token
// kinds defined outside this package (the platform's "oge_" enrollment
// bearer and "oget_" enroll token). claims must marshal with its keys in
// schema order (a struct does).
func Mint(prefix, secret string, claims any) (string, error) {
	// JSON.stringify does not escape <, > and &; encoding/json does unless told not to.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(claims); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidMint, err)
	}
	payload := b64.EncodeToString(bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	return prefix + payload + "." + sign(secret, payload), nil
}

func sign(secret, payload string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(payload))
	return b64.EncodeToString(m.Sum(nil))
}

// Verify checks the prefix, structure and signature of tok and decodes its
// payload into dst. Errors are ErrBadPrefix, ErrMalformed, ErrBadSignature or
// ErrBadClaims; the caller checks required fields and expiry (exp < now is
// expired, exp == now is still valid).
func Verify(prefix, secret, tok string, dst any) error {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return ErrBadPrefix
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot <= 0 {
		return ErrMalformed
	}
	payload, sig := rest[:dot], rest[dot+1:]
	// Constant-time compare of the encoded signatures; a length mismatch is unequal.
	if !hmac.Equal([]byte(sig), []byte(sign(secret, payload))) {
		return ErrBadSignature
	}
	p := strings.TrimRight(payload, "=")
	if strings.ContainsAny(p, "\r\n") { // Go's decoder skips newlines; the reference does not
		return ErrBadClaims
	}
	raw, err := b64.Strict().DecodeString(p)
	if err != nil {
		return ErrBadClaims
	}
	if !utf8.Valid(raw) {
		return ErrBadClaims
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return ErrBadClaims
	}
	return nil
}
