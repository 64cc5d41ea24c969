package enroll

import (
	"errors"
	"fmt"
	"time"

	"github.com/opengeni/opengeni-agent/relay/token"
)

// Token prefixes (control.md §7).
const (
	BearerPrefix      = "oge_"
	EnrollTokenPrefix = "oget_"
)

// Lifetimes and intervals (control.md §6.3).
const (
	DeviceCodeTTL      = 600 * time.Second     // DEVICE_CODE_TTL_SECONDS
	DevicePollInterval = 5 * time.Second       // DEVICE_POLL_INTERVAL_SECONDS
	BearerTTL          = 2592000 * time.Second // ENROLLMENT_BEARER_TTL_SECONDS (30 days)
	RelayTokenTTL      = 2592000 * time.Second // RELAY_TOKEN_TTL_SECONDS
	EnrollTokenTTL     = 3600 * time.Second    // ENROLL_TOKEN_TTL_SECONDS
)

// EnrollTokenType is the typ claim of an enroll token.
const EnrollTokenType = "enroll"

// ErrInvalidToken is every verification failure: wrong prefix, malformed,
// bad signature, bad claims, wrong typ, expired. Wrapped causes are the
// relay/token sentinels (errors.Is).
var ErrInvalidToken = errors.New("invalid token")

// BearerClaims are the claims of an "oge_" enrollment bearer, in key order.
type BearerClaims struct {
	WorkspaceID   string `json:"workspaceId"`
	AgentID       string `json:"agentId"`
	EnrollmentID  string `json:"enrollmentId"` // == AgentID
	SubjectPrefix string `json:"subjectPrefix"`
	Exp           int64  `json:"exp"`
	// CredentialGeneration is the enrollment's credential generation
	// (control.md §9); absent (0) counts as 1, and generation 1 bearers
	// omit it, so they stay byte-identical to the reference's v1 bearers.
	CredentialGeneration int `json:"credentialGeneration,omitempty"`
}

// Generation is the bearer's credential generation (absent = 1).
func (c BearerClaims) Generation() int { return max(c.CredentialGeneration, 1) }

// EnrollClaims are the claims of an "oget_" enroll token, in key order.
type EnrollClaims struct {
	Typ                string `json:"typ"` // "enroll"
	WorkspaceID        string `json:"workspaceId"`
	AccountID          string `json:"accountId"`
	AllowScreenControl bool   `json:"allowScreenControl"`
	Iat                int64  `json:"iat"`
	Exp                int64  `json:"exp"`
}

// SubjectPrefix is "agent.<ws>.<agentId>".
func SubjectPrefix(workspaceID, agentID string) string {
	return "agent." + workspaceID + "." + agentID
}

// MintBearer signs an enrollment bearer for (ws, agent) expiring BearerTTL
// after now.
func MintBearer(secret, workspaceID, agentID string, now time.Time) (string, BearerClaims, error) {
	return MintBearerGeneration(secret, workspaceID, agentID, 1, now)
}

// MintBearerGeneration is MintBearer for a credential generation (see
// [BearerClaims.CredentialGeneration]).
func MintBearerGeneration(secret, workspaceID, agentID string, generation int, now time.Time) (string, BearerClaims, error) {
	c := BearerClaims{WorkspaceID: workspaceID, AgentID: agentID, EnrollmentID: agentID,
		SubjectPrefix: SubjectPrefix(workspaceID, agentID), Exp: now.Add(BearerTTL).Unix()}
	if generation > 1 {
		c.CredentialGeneration = generation
	}
	if secret == "" || workspaceID == "" || agentID == "" {
		return "", c, errors.New("enroll: MintBearer: secret, workspace and agent are required")
	}
	tok, err := token.Mint(BearerPrefix, secret, c)
	return tok, c, err
}

// VerifyBearer checks an "oge_" bearer at now: signature, every claim
// present and well-typed, exp ≥ now (seconds).
func VerifyBearer(secret, tok string, now time.Time) (BearerClaims, error) {
	var w struct {
		WorkspaceID   *string `json:"workspaceId"`
		AgentID       *string `json:"agentId"`
		EnrollmentID  *string `json:"enrollmentId"`
		SubjectPrefix *string `json:"subjectPrefix"`
		Exp           *int64  `json:"exp"`
		Generation    *int    `json:"credentialGeneration"`
	}
	if err := token.Verify(BearerPrefix, secret, tok, &w); err != nil {
		return BearerClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if w.WorkspaceID == nil || w.AgentID == nil || w.EnrollmentID == nil || w.SubjectPrefix == nil || w.Exp == nil ||
		*w.WorkspaceID == "" || *w.AgentID == "" || *w.EnrollmentID == "" {
		return BearerClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, token.ErrBadClaims)
	}
	c := BearerClaims{WorkspaceID: *w.WorkspaceID, AgentID: *w.AgentID, EnrollmentID: *w.EnrollmentID, SubjectPrefix: *w.SubjectPrefix, Exp: *w.Exp}
	if w.Generation != nil {
		if *w.Generation < 1 {
			return BearerClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, token.ErrBadClaims)
		}
		c.CredentialGeneration = *w.Generation
	}
	if c.Exp < now.Unix() {
		return BearerClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, token.ErrExpired)
	}
	return c, nil
}

// MintEnrollToken signs a zero-click enroll token for a workspace, expiring
// EnrollTokenTTL after now.
func MintEnrollToken(secret, workspaceID, accountID string, allowScreenControl bool, now time.Time) (string, EnrollClaims, error) {
	c := EnrollClaims{Typ: EnrollTokenType, WorkspaceID: workspaceID, AccountID: accountID, AllowScreenControl: allowScreenControl,
		Iat: now.Unix(), Exp: now.Add(EnrollTokenTTL).Unix()}
	if secret == "" || workspaceID == "" {
		return "", c, errors.New("enroll: MintEnrollToken: secret and workspace are required")
	}
	tok, err := token.Mint(EnrollTokenPrefix, secret, c)
	return tok, c, err
}

// VerifyEnrollToken checks an "oget_" token at now: signature, typ "enroll",
// every claim present and well-typed, exp ≥ now.
func VerifyEnrollToken(secret, tok string, now time.Time) (EnrollClaims, error) {
	var w struct {
		Typ                *string `json:"typ"`
		WorkspaceID        *string `json:"workspaceId"`
		AccountID          *string `json:"accountId"`
		AllowScreenControl *bool   `json:"allowScreenControl"`
		Iat                *int64  `json:"iat"`
		Exp                *int64  `json:"exp"`
	}
	if err := token.Verify(EnrollTokenPrefix, secret, tok, &w); err != nil {
		return EnrollClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if w.Typ == nil || *w.Typ != EnrollTokenType || w.WorkspaceID == nil || *w.WorkspaceID == "" || w.AccountID == nil ||
		w.AllowScreenControl == nil || w.Iat == nil || w.Exp == nil {
		return EnrollClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, token.ErrBadClaims)
	}
	c := EnrollClaims{Typ: *w.Typ, WorkspaceID: *w.WorkspaceID, AccountID: *w.AccountID, AllowScreenControl: *w.AllowScreenControl, Iat: *w.Iat, Exp: *w.Exp}
	if c.Exp < now.Unix() {
		return EnrollClaims{}, fmt.Errorf("%w: %w", ErrInvalidToken, token.ErrExpired)
	}
	return c, nil
}
