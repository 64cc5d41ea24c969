package enroll

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// Permissions (control.md §6.1); PermWorkspaceAdmin is a superset.
const (
	PermEnrollmentsRead   = "enrollments:read"
	PermEnrollmentsManage = "enrollments:manage"
	PermWorkspaceAdmin    = "workspace:admin"
)

// ErrUnauthenticated is returned by Authenticate when a request carries no
// valid credentials (401).
var ErrUnauthenticated = errors.New("unauthenticated")

// Principal is an authenticated user.
type Principal struct {
	SubjectID string // stamped on approvals
	Label     string // e.g. the user's email; stamped on approvals
}

// Authorizer answers who the user is and what they may do in a workspace.
// It is the platform's seam: its sessions, API keys and grants.
type Authorizer interface {
	// Authenticate identifies the user behind r, or returns
	// ErrUnauthenticated. Other errors are 500s.
	Authenticate(r *http.Request) (*Principal, error)
	// Permissions lists p's permissions in a workspace (none: nil).
	Permissions(ctx context.Context, p *Principal, workspaceID string) ([]string, error)
}

// Allows reports whether perms grant need (workspace:admin grants all).
func Allows(perms []string, need string) bool {
	return slices.Contains(perms, need) || slices.Contains(perms, PermWorkspaceAdmin)
}

// StaticToken is the `relay dev` authorizer: one admin token (sent as
// "Authorization: Bearer <token>") that holds workspace:admin in every
// workspace.
type StaticToken struct {
	Token string
	Label string // "" means "local admin"
}

// Authenticate compares the bearer in constant time.
func (s StaticToken) Authenticate(r *http.Request) (*Principal, error) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || s.Token == "" || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(s.Token)) != 1 {
		return nil, ErrUnauthenticated
	}
	label := s.Label
	if label == "" {
		label = "local admin"
	}
	return &Principal{SubjectID: "local-admin", Label: label}, nil
}

// Permissions is workspace:admin everywhere.
func (StaticToken) Permissions(context.Context, *Principal, string) ([]string, error) {
	return []string{PermWorkspaceAdmin}, nil
}
