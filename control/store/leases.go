package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ConnectionLeaseTTL is AGENT_CONNECTION_LEASE_MS (control.md §9): how long
// a connection instance holds its enrollment without a heartbeat or hello.
const ConnectionLeaseTTL = 20 * time.Second

// ErrLeaseHeld: another live connection instance holds the enrollment (a
// second runner with cloned credentials).
var ErrLeaseHeld = errors.New("store: the enrollment's connection lease is held by another instance")

// ConnectionLease is who holds an enrollment's connection (machines
// bucket, key l.<ws>.<id>).
type ConnectionLease struct {
	Instance  string    `json:"instance"`
	ExpiresAt time.Time `json:"expiresAt"`
	// Announced: the instance said Hello, which it does only after it
	// subscribed, so its rpc subject has a responder (routing may use it).
	Announced bool `json:"announced,omitempty"`
}

func leaseKey(ws, id string) string { return "l." + ws + "." + id }

// ClaimConnection gives the enrollment's connection lease to instance for
// ConnectionLeaseTTL: when there is none, it lapsed, or instance already
// holds it (a reconnect). Otherwise ErrLeaseHeld. The callout claims at
// every connect of a next-revision connection; heartbeats renew it.
func (s *Store) ClaimConnection(ctx context.Context, ws, id, instance string) error {
	return s.leaseUpdate(ctx, ws, id, instance, false)
}

// RenewConnection extends the lease of instance; a lease held by another
// live instance is left alone (ErrLeaseHeld), a lapsed one is taken.
// announced records that the instance said Hello.
func (s *Store) RenewConnection(ctx context.Context, ws, id, instance string, announced bool) error {
	return s.leaseUpdate(ctx, ws, id, instance, announced)
}

// ReleaseConnection drops the lease if instance holds it (GoingOffline), so
// a replacement runner is admitted at once.
func (s *Store) ReleaseConnection(ctx context.Context, ws, id, instance string) error {
	if !validID(ws) || !validID(id) {
		return ErrInvalidKey
	}
	cur, rev, err := getJSON[ConnectionLease](ctx, s.machines, leaseKey(ws, id))
	if errors.Is(err, ErrNotFound) || (err == nil && cur.Instance != instance) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.machines.Delete(ctx, leaseKey(ws, id), jetstream.LastRevision(rev)); err != nil && !isExists(err) {
		return fmt.Errorf("store: release lease: %w", err)
	}
	return nil
}

func (s *Store) leaseUpdate(ctx context.Context, ws, id, instance string, announced bool) error {
	if !validID(ws) || !validID(id) || !validID(instance) {
		return ErrInvalidKey
	}
	key := leaseKey(ws, id)
	for range casRetries {
		now := s.Now().UTC()
		cur, rev, err := getJSON[ConnectionLease](ctx, s.machines, key)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if err == nil && cur.Instance != instance && cur.ExpiresAt.After(now) {
			return ErrLeaseHeld
		}
		next := ConnectionLease{Instance: instance, ExpiresAt: now.Add(ConnectionLeaseTTL),
			Announced: announced || (err == nil && cur.Instance == instance && cur.Announced)}
		if _, err := putJSON(ctx, s.machines, key, &next, rev); errors.Is(err, errCAS) {
			continue
		} else if err != nil {
			return err
		}
		return nil
	}
	return ErrConflict
}

// LiveInstance is the machine's live connection instance: the holder of an
// unexpired lease once its Hello was seen (the agent says hello only after
// it subscribed, so the instance subject has a responder), else "" (a v1
// agent, none connected, or a new instance not yet announced: the v1
// subject, which every connection serves, reaches it). It implements
// control.InstanceResolver.
func (s *Store) LiveInstance(ctx context.Context, ws, id string) (string, error) {
	if !validID(ws) || !validID(id) {
		return "", ErrInvalidKey
	}
	l, _, err := getJSON[ConnectionLease](ctx, s.machines, leaseKey(ws, id))
	if errors.Is(err, ErrNotFound) || (err == nil && (!l.Announced || !l.ExpiresAt.After(s.Now()))) {
		return "", nil
	}
	return l.Instance, err
}
