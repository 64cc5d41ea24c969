package enroll

import (
	"errors"
	"net/http"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/enrollwire"
)

// MintResponse is the enroll-token mint reply.
type MintResponse struct {
	Token            string `json:"token"`
	ExpiresAt        string `json:"expiresAt"`
	ExpiresInSeconds int    `json:"expiresInSeconds"`
}

func (a *API) handleMint(_ http.ResponseWriter, r *http.Request, _ *Principal, body []byte) (int, any, error) {
	var req struct {
		AllowScreenControl *bool `json:"allowScreenControl"`
	}
	if err := decode(body, &req, true); err != nil {
		return 0, nil, err
	}
	if a.cfg.SigningSecret == "" {
		return 0, nil, errNoSecret
	}
	ws := r.PathValue("ws")
	account, err := a.account(r, ws)
	if err != nil {
		return 0, nil, err
	}
	now := a.now()
	tok, c, err := MintEnrollToken(a.cfg.SigningSecret, ws, account, req.AllowScreenControl != nil && *req.AllowScreenControl, now)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, MintResponse{Token: tok, ExpiresAt: control.ISOTime(time.Unix(c.Exp, 0)),
		ExpiresInSeconds: int(EnrollTokenTTL / time.Second)}, nil
}

// handleExchange trades an enroll token for credentials: the same finalize
// as an approval, with screen control from the token's claim (the agent's
// requestsScreenControl is ignored). Stateless: a token is reusable until
// it expires.
func (a *API) handleExchange(_ http.ResponseWriter, r *http.Request, body []byte) (int, any, error) {
	var req struct {
		machineFields
		Token *string `json:"token"`
	}
	if err := decode(body, &req, false); err != nil {
		return 0, nil, err
	}
	if err := strLen("token", req.Token, 1, 4096, true); err != nil {
		return 0, nil, err
	}
	m, err := req.validate()
	if err != nil {
		return 0, nil, err
	}
	if a.cfg.SigningSecret == "" {
		return 0, nil, errNoSecret
	}
	c, err := VerifyEnrollToken(a.cfg.SigningSecret, *req.Token, a.now())
	if err != nil {
		return 0, nil, errBadEnroll
	}
	e, err := a.cfg.Store.UpsertEnrollment(r.Context(), store.FinalizeInput{
		WorkspaceID: c.WorkspaceID, AccountID: c.AccountID, Pubkey: m.pubkey, OS: m.os, Arch: m.arch,
		MachineName: deref(m.name), HasDisplay: m.canOfferDisplay, AllowScreenControl: c.AllowScreenControl,
	})
	if errors.Is(err, store.ErrInvalidKey) {
		return 0, nil, errBadEnroll
	}
	if err != nil {
		return 0, nil, err
	}
	creds, err := a.credentials(e)
	if err != nil {
		return 0, nil, err
	}
	a.log.Info("enroll token exchanged", "workspace", c.WorkspaceID, "enrollment", e.ID)
	return http.StatusCreated, enrollwire.ExchangeResponse{Credentials: creds}, nil
}

func (a *API) handleList(_ http.ResponseWriter, r *http.Request, _ *Principal, _ []byte) (int, any, error) {
	status := r.URL.Query().Get("status")
	if status != "" && status != control.EnrollmentActive && status != control.EnrollmentRevoked {
		return 0, nil, invalid("status", "must be active|revoked")
	}
	list, err := a.cfg.Store.ListEnrollments(r.Context(), r.PathValue("ws"), status)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"enrollments": list}, nil
}

func (a *API) handleRevoke(_ http.ResponseWriter, r *http.Request, p *Principal, _ []byte) (int, any, error) {
	ws, id := r.PathValue("ws"), r.PathValue("id")
	ok, err := a.cfg.Store.RevokeEnrollment(r.Context(), ws, id)
	if err != nil {
		return 0, nil, err
	}
	if ok {
		a.log.Info("enrollment revoked", "workspace", ws, "enrollment", id, "by", p.SubjectID)
	}
	return http.StatusOK, map[string]bool{"revoked": ok}, nil
}
