package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Device request statuses.
const (
	DevicePending  = "pending"
	DeviceApproved = "approved"
	DeviceDenied   = "denied"
	DeviceConsumed = "consumed"
)

// DeviceRequest is one device-flow enrollment request (the reference's
// device_enrollment_requests row).
type DeviceRequest struct {
	ID string `json:"id"`
	// DeviceCode is the secret the machine polls with. It is never stored:
	// the row is keyed by CodeHash, so a read of the bucket yields nothing
	// that can be polled for credentials. Set only on the value passed to
	// CreateDeviceRequest.
	DeviceCode            string     `json:"-"`
	CodeHash              string     `json:"codeHash"`
	UserCode              string     `json:"userCode"`
	AccountID             string     `json:"accountId,omitempty"`
	WorkspaceID           string     `json:"workspaceId"`
	Pubkey                string     `json:"pubkey"`
	OS                    string     `json:"os"`
	Arch                  string     `json:"arch"`
	MachineName           *string    `json:"machineName"`
	RequestedExposure     string     `json:"requestedExposure"`
	CanOfferDisplay       bool       `json:"canOfferDisplay"`
	RequestsScreenControl bool       `json:"requestsScreenControl"`
	Status                string     `json:"status"`
	ApprovedBySubjectID   string     `json:"approvedBySubjectId,omitempty"`
	ApprovedByLabel       string     `json:"approvedByLabel,omitempty"`
	AllowScreenControl    bool       `json:"allowScreenControl"`
	ApprovedAt            *time.Time `json:"approvedAt,omitempty"`
	EnrollmentID          string     `json:"enrollmentId,omitempty"`
	SandboxID             string     `json:"sandboxId,omitempty"`
	ExpiresAt             time.Time  `json:"expiresAt"`
	CreatedAt             time.Time  `json:"createdAt"`
	UpdatedAt             time.Time  `json:"updatedAt"`
}

// Expired reports a pending request past its expiry (expiresAt ≤ now).
func (d DeviceRequest) Expired(now time.Time) bool {
	return d.Status == DevicePending && !d.ExpiresAt.After(now)
}

// DeviceCodeHash is the key a device code is stored under: hex SHA-256.
// Device codes are 32 CSPRNG bytes, so an unsalted hash is enough.
func DeviceCodeHash(code string) string {
	h := sha256.Sum256([]byte(code))
	return hex.EncodeToString(h[:])
}

func deviceKey(hash string) string { return "d." + hash }
func userKey(code string) string   { return "u." + code }

// CreateDeviceRequest stores a new pending request. ErrExists means the
// device code is taken, or the user code belongs to another pending request
// (user codes are unique among pending requests only): re-mint both and
// retry.
func (s *Store) CreateDeviceRequest(ctx context.Context, d DeviceRequest) error {
	if !validID(d.DeviceCode) || !validID(d.UserCode) {
		return ErrInvalidKey
	}
	now := s.Now().UTC()
	d.CreatedAt, d.UpdatedAt = now, now
	d.CodeHash = DeviceCodeHash(d.DeviceCode)
	// Claim the user code first: free, or pointing at a request that is no
	// longer pending.
	uk := userKey(d.UserCode)
	for attempt := 0; ; attempt++ {
		if attempt == casRetries {
			return ErrConflict
		}
		entry, err := s.devices.Get(ctx, uk)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err := s.devices.Create(ctx, uk, []byte(d.CodeHash)); isExists(err) {
				continue
			} else if err != nil {
				return fmt.Errorf("store: claim user code: %w", err)
			}
			break
		}
		if err != nil {
			return fmt.Errorf("store: get user code: %w", err)
		}
		prev, _, err := getJSON[DeviceRequest](ctx, s.devices, deviceKey(string(entry.Value())))
		if err == nil && prev.Status == DevicePending {
			return ErrExists
		}
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if _, err := s.devices.Update(ctx, uk, []byte(d.CodeHash), entry.Revision()); isExists(err) {
			continue
		} else if err != nil {
			return fmt.Errorf("store: claim user code: %w", err)
		}
		break
	}
	if _, err := putJSON(ctx, s.devices, deviceKey(d.CodeHash), &d, 0); errors.Is(err, errCAS) {
		return ErrExists
	} else if err != nil {
		return err
	}
	return nil
}

// GetDeviceRequest returns the request of a device code.
func (s *Store) GetDeviceRequest(ctx context.Context, deviceCode string) (DeviceRequest, error) {
	if !validID(deviceCode) {
		return DeviceRequest{}, ErrNotFound
	}
	return s.deviceByHash(ctx, DeviceCodeHash(deviceCode))
}

func (s *Store) deviceByHash(ctx context.Context, hash string) (DeviceRequest, error) {
	d, _, err := getJSON[DeviceRequest](ctx, s.devices, deviceKey(hash))
	return d, err
}

// DeviceRequestByUserCode returns the newest request holding a user code
// (any status; the caller checks pending and expiry).
func (s *Store) DeviceRequestByUserCode(ctx context.Context, userCode string) (DeviceRequest, error) {
	if !validID(userCode) {
		return DeviceRequest{}, ErrNotFound
	}
	entry, err := s.devices.Get(ctx, userKey(userCode))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return DeviceRequest{}, ErrNotFound
	}
	if err != nil {
		return DeviceRequest{}, fmt.Errorf("store: get user code: %w", err)
	}
	return s.deviceByHash(ctx, string(entry.Value()))
}

// UpdateDeviceRequest applies f to the request stored under codeHash
// ([DeviceRequest.CodeHash]) with compare-and-set (the reference's row
// lock): f sees the current row and returns false to leave it unchanged. It
// returns the row as stored afterwards.
func (s *Store) UpdateDeviceRequest(ctx context.Context, codeHash string, f func(*DeviceRequest) (bool, error)) (DeviceRequest, bool, error) {
	if !validID(codeHash) {
		return DeviceRequest{}, false, ErrNotFound
	}
	return mutate(ctx, s.devices, deviceKey(codeHash), func(d *DeviceRequest) (bool, error) {
		changed, err := f(d)
		if changed {
			d.UpdatedAt = s.Now().UTC()
		}
		return changed, err
	})
}
