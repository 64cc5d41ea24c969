package enroll

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/enrollwire"
)

// mintRetries bounds re-minting codes on a collision.
const mintRetries = 5

// StartResponse is the device-flow start reply (the agent reads the same type).
type StartResponse = enrollwire.StartResponse

func (a *API) handleStart(_ http.ResponseWriter, r *http.Request, body []byte) (int, any, error) {
	var req struct {
		machineFields
		WorkspaceID *string `json:"workspaceId"`
	}
	if err := decode(body, &req, false); err != nil {
		return 0, nil, err
	}
	m, err := req.validate()
	if err != nil {
		return 0, nil, err
	}
	if req.WorkspaceID == nil || !uuidRE.MatchString(*req.WorkspaceID) {
		return 0, nil, invalid("workspaceId", "must be a uuid")
	}
	ws := *req.WorkspaceID
	account, err := a.account(r, ws)
	if err != nil {
		return 0, nil, err
	}
	now := a.now().UTC()
	d := store.DeviceRequest{
		ID: uuid.NewString(), AccountID: account, WorkspaceID: ws, Pubkey: m.pubkey, OS: m.os, Arch: m.arch,
		MachineName: m.name, RequestedExposure: m.exposure, CanOfferDisplay: m.canOfferDisplay,
		RequestsScreenControl: m.requestsScreenControl, Status: store.DevicePending, ExpiresAt: now.Add(DeviceCodeTTL),
	}
	for try := 0; ; try++ {
		d.DeviceCode, d.UserCode = NewDeviceCode(), NewUserCode()
		err = a.cfg.Store.CreateDeviceRequest(r.Context(), d)
		if err == nil {
			break
		}
		if !errors.Is(err, store.ErrExists) || try == mintRetries-1 {
			return 0, nil, err
		}
	}
	uri := a.origin(r) + "/device"
	return http.StatusCreated, StartResponse{
		DeviceCode: d.DeviceCode, UserCode: d.UserCode, VerificationURI: uri,
		VerificationURIComplete: uri + "?user_code=" + url.QueryEscape(d.UserCode),
		IntervalSeconds:         uint32(DevicePollInterval / time.Second), ExpiresInSeconds: uint32(DeviceCodeTTL / time.Second),
	}, nil
}

// PollResponse is the device-flow poll reply (the agent reads the same type).
type PollResponse = enrollwire.PollResponse

func (a *API) handlePoll(_ http.ResponseWriter, r *http.Request, body []byte) (int, any, error) {
	var req struct {
		DeviceCode *string `json:"deviceCode"`
	}
	if err := decode(body, &req, false); err != nil {
		return 0, nil, err
	}
	if err := strLen("deviceCode", req.DeviceCode, 1, 256, true); err != nil {
		return 0, nil, err
	}
	state, creds, err := a.pollState(r, *req.DeviceCode)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, PollResponse{State: state, Credentials: creds}, nil
}

// pollState is the poll state machine of control.md §6.3 (first match wins;
// the HTTP API has no slow_down: 429 does that job),
// with one deliberate deviation: a device code is single-use. The reference
// returns fresh credentials on every poll of a consumed code, so a code read
// from a log, a proxy or the store mints bearers for the machine for as long
// as the row lives; here the poll that flips approved → consumed is the
// only one that gets credentials, and every later poll reads "expired"
// (docs/security.md). A machine that lost that one answer pairs again.
func (a *API) pollState(r *http.Request, deviceCode string) (enrollwire.State, *Credentials, error) {
	ctx := r.Context()
	d, err := a.cfg.Store.GetDeviceRequest(ctx, deviceCode)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return enrollwire.StateExpired, nil, nil // existence is not leaked
	case err != nil:
		return "", nil, err
	case d.Status == store.DeviceDenied:
		return enrollwire.StateDenied, nil, nil
	case d.Status == store.DevicePending && d.Expired(a.now()):
		return enrollwire.StateExpired, nil, nil
	case d.Status == store.DevicePending:
		return enrollwire.StatePending, nil, nil
	case d.Status != store.DeviceApproved || d.EnrollmentID == "":
		return enrollwire.StateExpired, nil, nil // consumed: single-use
	case a.cfg.SigningSecret == "":
		return enrollwire.StateDisabled, nil, nil
	}
	e, err := a.cfg.Store.GetEnrollment(ctx, d.WorkspaceID, d.EnrollmentID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !e.Active()) {
		return enrollwire.StateDenied, nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	// Consume first (compare-and-set): of concurrent polls exactly one wins.
	_, consumed, err := a.cfg.Store.UpdateDeviceRequest(ctx, d.CodeHash, func(d *store.DeviceRequest) (bool, error) {
		if d.Status != store.DeviceApproved {
			return false, nil
		}
		d.Status = store.DeviceConsumed
		return true, nil
	})
	if err != nil {
		return "", nil, err
	}
	if !consumed {
		return enrollwire.StateExpired, nil, nil
	}
	creds, err := a.credentials(e)
	if err != nil {
		return "", nil, err
	}
	return enrollwire.StateAuthorized, creds, nil
}

// LookupResponse describes a pending request to the approving user.
type LookupResponse struct {
	WorkspaceID string        `json:"workspaceId"`
	UserCode    string        `json:"userCode"`
	Machine     LookupMachine `json:"machine"`
	ExpiresAt   string        `json:"expiresAt"`
}

// LookupMachine is the machine of a pending request.
type LookupMachine struct {
	MachineName           *string `json:"machineName"`
	OS                    string  `json:"os"`
	Arch                  string  `json:"arch"`
	CanOfferDisplay       bool    `json:"canOfferDisplay"`
	RequestsScreenControl bool    `json:"requestsScreenControl"`
}

// handleLookup: unknown code, no auth, or no enrollments:read in the code's
// workspace are all 404 (no disclosure). It does not consume the code.
func (a *API) handleLookup(_ http.ResponseWriter, r *http.Request, body []byte) (int, any, error) {
	userCode, err := decodeUserCode(body)
	if err != nil {
		return 0, nil, err
	}
	p, err := a.cfg.Authorizer.Authenticate(r)
	if errors.Is(err, ErrUnauthenticated) {
		return 0, nil, errNotFound
	} else if err != nil {
		return 0, nil, err
	}
	d, err := a.pendingByUserCode(r, userCode)
	if err != nil {
		return 0, nil, err
	}
	perms, err := a.cfg.Authorizer.Permissions(r.Context(), p, d.WorkspaceID)
	if err != nil {
		return 0, nil, err
	}
	if !Allows(perms, PermEnrollmentsRead) {
		return 0, nil, errNotFound
	}
	return http.StatusOK, LookupResponse{
		WorkspaceID: d.WorkspaceID, UserCode: d.UserCode, ExpiresAt: control.ISOTime(d.ExpiresAt),
		Machine: LookupMachine{MachineName: d.MachineName, OS: d.OS, Arch: d.Arch, CanOfferDisplay: d.CanOfferDisplay,
			RequestsScreenControl: d.RequestsScreenControl},
	}, nil
}

// pendingByUserCode is the live (pending, unexpired) request of a user code,
// or errNotFound.
func (a *API) pendingByUserCode(r *http.Request, userCode string) (store.DeviceRequest, error) {
	d, err := a.cfg.Store.DeviceRequestByUserCode(r.Context(), normalizeUserCode(userCode))
	if errors.Is(err, store.ErrNotFound) {
		return d, errNotFound
	}
	if err != nil {
		return d, err
	}
	if d.Status != store.DevicePending || d.Expired(a.now()) {
		return d, errNotFound
	}
	return d, nil
}

// ApproveResponse is the approve reply.
type ApproveResponse struct {
	Approved           bool   `json:"approved"`
	EnrollmentID       string `json:"enrollmentId"`
	SandboxID          string `json:"sandboxId"`
	AllowScreenControl bool   `json:"allowScreenControl"`
}

// handleApprove finalizes a live pending request of this workspace. The
// compare-and-set on the request row stands in for the reference's row lock:
// finalize runs inside it (it is an idempotent upsert, safe to re-run when
// the row changed under it).
func (a *API) handleApprove(_ http.ResponseWriter, r *http.Request, p *Principal, body []byte) (int, any, error) {
	var req struct {
		UserCode           *string `json:"userCode"`
		AllowScreenControl *bool   `json:"allowScreenControl"`
	}
	if err := decode(body, &req, false); err != nil {
		return 0, nil, err
	}
	if err := strLen("userCode", req.UserCode, 1, 64, true); err != nil {
		return 0, nil, err
	}
	allow := req.AllowScreenControl != nil && *req.AllowScreenControl
	ws := r.PathValue("ws")
	d, err := a.pendingByUserCode(r, *req.UserCode)
	if errors.Is(err, errNotFound) || (err == nil && d.WorkspaceID != ws) {
		return 0, nil, errNoPending
	}
	if err != nil {
		return 0, nil, err
	}
	var enr store.Enrollment
	_, approved, err := a.cfg.Store.UpdateDeviceRequest(r.Context(), d.CodeHash, func(d *store.DeviceRequest) (bool, error) {
		if d.Status != store.DevicePending || d.Expired(a.now()) || d.WorkspaceID != ws {
			return false, nil
		}
		var err error
		enr, err = a.cfg.Store.UpsertEnrollment(r.Context(), store.FinalizeInput{
			WorkspaceID: d.WorkspaceID, AccountID: d.AccountID, Pubkey: d.Pubkey, OS: d.OS, Arch: d.Arch,
			MachineName: deref(d.MachineName), HasDisplay: d.CanOfferDisplay, AllowScreenControl: allow,
		})
		if err != nil {
			return false, err
		}
		now := a.now().UTC()
		d.Status, d.ApprovedBySubjectID, d.ApprovedByLabel = store.DeviceApproved, p.SubjectID, p.Label
		d.AllowScreenControl, d.ApprovedAt, d.EnrollmentID, d.SandboxID = allow, &now, enr.ID, enr.SandboxID
		return true, nil
	})
	if err != nil {
		return 0, nil, err
	}
	if !approved {
		return 0, nil, errNoPending
	}
	a.log.Info("enrollment approved", "workspace", ws, "enrollment", enr.ID, "by", p.SubjectID)
	return http.StatusCreated, ApproveResponse{Approved: true, EnrollmentID: enr.ID, SandboxID: enr.SandboxID, AllowScreenControl: allow}, nil
}

// handleDeny flips a pending request of this workspace to denied.
func (a *API) handleDeny(_ http.ResponseWriter, r *http.Request, _ *Principal, body []byte) (int, any, error) {
	userCode, err := decodeUserCode(body)
	if err != nil {
		return 0, nil, err
	}
	ws := r.PathValue("ws")
	d, err := a.cfg.Store.DeviceRequestByUserCode(r.Context(), normalizeUserCode(userCode))
	if errors.Is(err, store.ErrNotFound) {
		return http.StatusOK, map[string]bool{"denied": false}, nil
	}
	if err != nil {
		return 0, nil, err
	}
	_, denied, err := a.cfg.Store.UpdateDeviceRequest(r.Context(), d.CodeHash, func(d *store.DeviceRequest) (bool, error) {
		if d.Status != store.DevicePending || d.WorkspaceID != ws {
			return false, nil
		}
		d.Status = store.DeviceDenied
		return true, nil
	})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]bool{"denied": denied}, nil
}

// decodeUserCode parses the {"userCode": "..."} body of lookup and deny.
func decodeUserCode(body []byte) (string, error) {
	var req struct {
		UserCode *string `json:"userCode"`
	}
	if err := decode(body, &req, false); err != nil {
		return "", err
	}
	if err := strLen("userCode", req.UserCode, 1, 64, true); err != nil {
		return "", err
	}
	return *req.UserCode, nil
}
