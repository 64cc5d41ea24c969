package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control"
)

// Enrollment is one paired machine (the reference's enrollments row plus its
// one selfhosted sandbox). The enrollment id is also the agent id.
type Enrollment struct {
	ID                 string     `json:"id"`
	WorkspaceID        string     `json:"workspaceId"`
	AccountID          string     `json:"accountId,omitempty"`
	Pubkey             string     `json:"pubkey"`
	Exposure           string     `json:"exposure"`
	HasDisplay         bool       `json:"hasDisplay"`
	AllowScreenControl bool       `json:"allowScreenControl"`
	Status             string     `json:"status"` // active | revoked
	OS                 string     `json:"os"`
	Arch               string     `json:"arch"`
	SandboxID          string     `json:"sandboxId"`
	SandboxName        string     `json:"sandboxName"`
	CreatedAt          time.Time  `json:"createdAt"`
	UpdatedAt          time.Time  `json:"updatedAt"`
	RevokedAt          *time.Time `json:"revokedAt"`
	// CredentialGeneration (control.md §9; absent = 1) is bumped when a
	// revoked enrollment is re-activated, so bearers issued before the
	// revocation never work again, even though the id is reused.
	CredentialGeneration int `json:"credentialGeneration,omitempty"`
}

// Generation is the credential generation (absent = 1).
func (e Enrollment) Generation() int { return max(e.CredentialGeneration, 1) }

// Active reports status == "active".
func (e Enrollment) Active() bool { return e.Status == control.EnrollmentActive }

// FinalizeInput is what pairing knows about the machine when it is approved
// (device flow) or exchanges an enroll token.
type FinalizeInput struct {
	WorkspaceID        string
	AccountID          string
	Pubkey             string
	OS, Arch           string
	MachineName        string
	HasDisplay         bool
	AllowScreenControl bool
}

// MaxSandboxName bounds the sandbox name.
const MaxSandboxName = 256

// SandboxName is the trimmed machine name, or "<os> machine", at most 256
// characters.
func SandboxName(machineName, os string) string {
	n := strings.TrimSpace(machineName)
	if n == "" {
		n = os + " machine"
	}
	if r := []rune(n); len(r) > MaxSandboxName {
		n = string(r[:MaxSandboxName])
	}
	return n
}

func enrollmentKey(ws, id string) string { return "e." + ws + "." + id }

// EnrollmentKeys is the key filter of the enrollment records (for watchers
// outside the store, such as the relay's revocation watch).
const EnrollmentKeys = "e.>"

// EnrollmentsBucket is the enrollments bucket's name under prefix ("" is
// DefaultPrefix).
func EnrollmentsBucket(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return prefix + "_enrollments"
}

// ParseEnrollmentKey splits an enrollment record key "e.<ws>.<id>".
func ParseEnrollmentKey(key string) (ws, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, "e.")
	if !ok {
		return "", "", false
	}
	ws, id, ok = strings.Cut(rest, ".")
	if !ok || !validID(ws) || !validID(id) {
		return "", "", false
	}
	return ws, id, true
}

func pubkeyKey(ws, pubkey string) string {
	h := sha256.Sum256([]byte(pubkey))
	return "p." + ws + "." + hex.EncodeToString(h[:])
}

// UpsertEnrollment is finalize steps 1 and 2 (control.md §6.3): upsert the
// enrollment on (workspace, pubkey) — whole-machine exposure, the display and
// screen-control decisions, os, arch, status active, revokedAt cleared — and
// ensure its one sandbox. Re-enrolling a pubkey re-activates the same id and
// reuses the sandbox.
func (s *Store) UpsertEnrollment(ctx context.Context, in FinalizeInput) (Enrollment, error) {
	if !validID(in.WorkspaceID) {
		return Enrollment{}, ErrInvalidKey
	}
	now := s.Now().UTC()
	pk := pubkeyKey(in.WorkspaceID, in.Pubkey)
	for range casRetries {
		entry, err := s.enrollments.Get(ctx, pk)
		var (
			id  string
			cur Enrollment
			rev uint64 // 0: create the record
		)
		switch {
		case err == nil:
			id = string(entry.Value())
			cur, rev, err = getJSON[Enrollment](ctx, s.enrollments, enrollmentKey(in.WorkspaceID, id))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return Enrollment{}, err
			}
		case errors.Is(err, jetstream.ErrKeyNotFound):
			id = uuid.NewString()
			if _, err := s.enrollments.Create(ctx, pk, []byte(id)); err != nil {
				if isExists(err) {
					continue // a concurrent finalize won; use its id
				}
				return Enrollment{}, fmt.Errorf("store: create pubkey index: %w", err)
			}
			// A fresh id has no record yet: nothing to read.
		default:
			return Enrollment{}, fmt.Errorf("store: get pubkey index: %w", err)
		}
		key := enrollmentKey(in.WorkspaceID, id)
		if rev == 0 {
			cur = Enrollment{ID: id, WorkspaceID: in.WorkspaceID, CreatedAt: now, SandboxID: uuid.NewString()}
		}
		cur.Pubkey = in.Pubkey
		cur.Exposure = control.ExposureWholeMachine
		cur.HasDisplay = in.HasDisplay
		cur.AllowScreenControl = in.AllowScreenControl
		cur.OS, cur.Arch = in.OS, in.Arch
		if rev != 0 && !cur.Active() {
			cur.CredentialGeneration = cur.Generation() + 1
		}
		cur.Status = control.EnrollmentActive
		cur.RevokedAt = nil
		cur.UpdatedAt = now
		if in.AccountID != "" {
			cur.AccountID = in.AccountID
		}
		if cur.SandboxID == "" {
			cur.SandboxID = uuid.NewString()
		}
		if cur.SandboxName == "" {
			cur.SandboxName = SandboxName(in.MachineName, in.OS)
		}
		if _, err := putJSON(ctx, s.enrollments, key, &cur, rev); errors.Is(err, errCAS) {
			continue
		} else if err != nil {
			return Enrollment{}, err
		}
		s.known.Store(in.WorkspaceID+"."+id, struct{}{})
		return cur, nil
	}
	return Enrollment{}, ErrConflict
}

// GetEnrollment returns the enrollment (ErrNotFound when there is none).
func (s *Store) GetEnrollment(ctx context.Context, ws, id string) (Enrollment, error) {
	if !validID(ws) || !validID(id) {
		return Enrollment{}, ErrNotFound
	}
	e, _, err := getJSON[Enrollment](ctx, s.enrollments, enrollmentKey(ws, id))
	return e, err
}

// EnrollmentView is one row of the list route: the enrollment joined with
// its machine's last-seen time.
type EnrollmentView struct {
	ID                 string     `json:"id"`
	Pubkey             string     `json:"pubkey"`
	Exposure           string     `json:"exposure"`
	HasDisplay         bool       `json:"hasDisplay"`
	AllowScreenControl bool       `json:"allowScreenControl"`
	Status             string     `json:"status"`
	OS                 string     `json:"os"`
	Arch               string     `json:"arch"`
	LastSeenAt         *time.Time `json:"lastSeenAt"`
	CreatedAt          time.Time  `json:"createdAt"`
	RevokedAt          *time.Time `json:"revokedAt"`
}

// ListEnrollments lists a workspace's enrollments, newest first; status ""
// lists all.
func (s *Store) ListEnrollments(ctx context.Context, ws, status string) ([]EnrollmentView, error) {
	out := []EnrollmentView{}
	if !validID(ws) {
		return out, nil
	}
	lister, err := s.enrollments.ListKeysFiltered(ctx, "e."+ws+".*")
	if err != nil {
		return nil, fmt.Errorf("store: list enrollments: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop() // the lister stops itself once drained
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: list enrollments: %w", err)
	}
	for _, k := range keys {
		e, _, err := getJSON[Enrollment](ctx, s.enrollments, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if status != "" && e.Status != status {
			continue
		}
		v := EnrollmentView{ID: e.ID, Pubkey: e.Pubkey, Exposure: e.Exposure, HasDisplay: e.HasDisplay,
			AllowScreenControl: e.AllowScreenControl, Status: e.Status, OS: e.OS, Arch: e.Arch,
			CreatedAt: e.CreatedAt, RevokedAt: e.RevokedAt}
		if m, err := s.GetMachine(ctx, ws, e.ID); err == nil {
			v.LastSeenAt = m.LastSeenAt
		}
		out = append(out, v)
	}
	slices.SortStableFunc(out, func(a, b EnrollmentView) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), strings.Compare(b.ID, a.ID))
	})
	return out, nil
}

// RevokeEnrollment flips an active enrollment to revoked (revokedAt = now)
// and reports whether it did; an unknown or already revoked one is false.
func (s *Store) RevokeEnrollment(ctx context.Context, ws, id string) (bool, error) {
	if !validID(ws) || !validID(id) {
		return false, nil
	}
	now := s.Now().UTC()
	_, changed, err := mutate(ctx, s.enrollments, enrollmentKey(ws, id), func(e *Enrollment) (bool, error) {
		if !e.Active() {
			return false, nil
		}
		e.Status, e.RevokedAt, e.UpdatedAt = control.EnrollmentRevoked, &now, now
		return true, nil
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return changed, err
}

// setHasDisplay writes hasDisplay only on a change.
func (s *Store) setHasDisplay(ctx context.Context, ws, id string, has bool) error {
	_, _, err := mutate(ctx, s.enrollments, enrollmentKey(ws, id), func(e *Enrollment) (bool, error) {
		if e.HasDisplay == has {
			return false, nil
		}
		e.HasDisplay, e.UpdatedAt = has, s.Now().UTC()
		return true, nil
	})
	return err
}

// enrollmentExists is ingestion's "known enrollment" check (cached).
func (s *Store) enrollmentExists(ctx context.Context, ws, id string) (bool, error) {
	k := ws + "." + id
	if _, ok := s.known.Load(k); ok {
		return true, nil
	}
	if !validID(ws) || !validID(id) {
		return false, nil
	}
	_, err := s.enrollments.Get(ctx, enrollmentKey(ws, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.known.Store(k, struct{}{})
	return true, nil
}

// WatchEnrollments calls f with every enrollment change (and, first, every
// current enrollment) until ctx ends. f runs on one goroutine.
func (s *Store) WatchEnrollments(ctx context.Context, f func(Enrollment)) error {
	w, err := s.enrollments.Watch(ctx, EnrollmentKeys)
	if err != nil {
		return fmt.Errorf("store: watch enrollments: %w", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil || entry.Operation() != jetstream.KeyValuePut {
					continue
				}
				var e Enrollment
				if err := json.Unmarshal(entry.Value(), &e); err != nil {
					s.log.Warn("undecodable enrollment", "key", entry.Key(), "err", err)
					continue
				}
				f(e)
			}
		}
	}()
	return nil
}

// ControlEnrollment is the liveness slice of an enrollment joined with its
// machine (nil when there is no such enrollment).
func (s *Store) ControlEnrollment(ctx context.Context, ws, id string) (*control.Enrollment, error) {
	e, err := s.GetEnrollment(ctx, ws, id)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	ce := &control.Enrollment{Status: e.Status, Exposure: e.Exposure, AllowScreenControl: e.AllowScreenControl, HasDisplay: e.HasDisplay}
	m, err := s.GetMachine(ctx, ws, id)
	if err == nil {
		ce.LastSeenAt, ce.WentOfflineAt = m.LastSeenAt, m.WentOfflineAt
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return ce, nil
}

// AdmitOperation is control.AdmitOperation over the stored state (the
// reference's resolveOperationAdmission, re-read before each op): the
// machine's liveness with the caller's probe, and its latest Hello and
// heartbeat.
func (s *Store) AdmitOperation(ctx context.Context, ws, id string, probeResponded bool, req control.OperationRequest) (control.OperationAdmission, error) {
	live, err := s.Liveness(ctx, ws, id, probeResponded)
	if err != nil {
		return control.OperationAdmission{}, err
	}
	m, err := s.GetMachine(ctx, ws, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return control.OperationAdmission{}, err
	}
	return control.AdmitOperation(live, m.Report(), req), nil
}

// Liveness is §3.2 over the stored state: probeResponded is the caller's
// probe (e.g. Session.Ping).
func (s *Store) Liveness(ctx context.Context, ws, id string, probeResponded bool) (control.Liveness, error) {
	ce, err := s.ControlEnrollment(ctx, ws, id)
	if err != nil {
		return control.Liveness{}, err
	}
	return control.SelfhostedLiveness(ce, probeResponded, s.Now()), nil
}
