// Package supervisor serves every connection stored on the machine, one
// agent each under its instance lock, following the connections directory:
// a new connection starts, a removed one stops (announcing GoingOffline), a
// re-enrolled one restarts with its new credentials. cmd/opengeni-agent's
// `run` builds the agent for each; this package owns the reconcile loop.
package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/instancelock"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// DefaultReloadInterval is how often Run re-reads the connections directory.
const DefaultReloadInterval = 2 * time.Second

// ServeFunc serves one connection until ctx ends (agent.Agent.Run).
// context.Cause(ctx) says why it ends (StopRemoved, StopReplaced, or the
// cause Run's context ended with).
type ServeFunc func(ctx context.Context, id string, c *config.Credentials) error

// Options configures a Supervisor.
type Options struct {
	Store  *config.Store
	Serve  ServeFunc
	Logger *slog.Logger // nil: slog.Default()
	// ReloadInterval: how often Run re-reads the directory (default
	// DefaultReloadInterval).
	ReloadInterval time.Duration
}

// New returns a Supervisor; Start then Run serve.
func New(o Options) *Supervisor {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ReloadInterval <= 0 {
		o.ReloadInterval = DefaultReloadInterval
	}
	return &Supervisor{store: o.Store, logger: o.Logger, serve: o.Serve, every: o.ReloadInterval,
		running: map[string]*served{}, stopping: map[string]*served{},
		locks: map[string]*instancelock.Lock{}, warned: map[string]string{}}
}

// Start serves what the directory holds now, under ctx. If another process
// serves one of the connections (its instance lock is held), Start stops
// what it started and returns that *instancelock.ContendedError: the caller
// exits, as a second copy of the agent should.
func (s *Supervisor) Start(ctx context.Context) error {
	if ce := s.reconcile(ctx, true); ce != nil {
		s.stopAll(nil)
		return ce
	}
	return nil
}

// Run follows the directory every ReloadInterval until ctx ends, then stops
// every connection (GoingOffline with context.Cause(ctx)'s reason), waits
// for them and releases the locks. A connection another process serves is
// skipped and retried on the next pass.
func (s *Supervisor) Run(ctx context.Context) {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.stopAll(context.Cause(ctx))
			return
		case <-t.C:
			s.reconcile(ctx, false)
		}
	}
}

// served is one running connection.
type served struct {
	fp     string
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// Supervisor serves the stored connections. Its methods are safe for
// concurrent use.
type Supervisor struct {
	store  *config.Store
	logger *slog.Logger
	serve  ServeFunc
	every  time.Duration

	mu       sync.Mutex
	running  map[string]*served
	stopping map[string]*served
	locks    map[string]*instancelock.Lock
	warned   map[string]string // id → last logged problem, to log once
	wg       sync.WaitGroup
}

// Count is the number of connections being served.
func (s *Supervisor) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.running)
}

// fingerprint identifies what a running agent was built from. Consent is
// left out: it is read live.
func fingerprint(c *config.Credentials) string {
	cp := *c
	cp.ConsentedScreenControl, cp.ConsentedWholeMachine = false, false
	b, _ := cp.Marshal()
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (s *Supervisor) warnOnce(id, msg string, args ...any) {
	if s.warned[id] == msg {
		return
	}
	s.warned[id] = msg
	s.logger.Warn(msg, append([]any{"connection", id}, args...)...)
}

// Why a connection stops while the supervisor runs on (its ServeFunc's
// context's cause).
var (
	StopRemoved  = agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "connection removed (opengeni-agent disconnect)"}
	StopReplaced = agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "credentials replaced (re-enrolled); reconnecting"}
)

// reconcile makes the running set match the directory. With initial, a
// contended lock stops everything and is returned (the caller exits);
// later, a contended connection is skipped and retried on the next pass.
func (s *Supervisor) reconcile(ctx context.Context, initial bool) *instancelock.ContendedError {
	conns, err := s.store.List()
	if err != nil {
		s.logger.Warn("could not read connections", "err", err)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	want := map[string]*config.Credentials{}
	for _, c := range conns {
		if c.Err != nil {
			s.warnOnce(c.ID, "skipping an unreadable connection", "err", c.Err)
			continue
		}
		want[c.ID] = c.Creds
	}
	// Stop what was removed.
	for id, e := range s.running {
		if _, ok := want[id]; !ok {
			s.logger.Info("connection removed; stopping it", "connection", id)
			s.stopLocked(id, e, StopRemoved)
		}
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		c := want[id]
		fp := fingerprint(c)
		if e, ok := s.running[id]; ok {
			if e.fp == fp {
				continue
			}
			s.logger.Info("connection credentials changed; restarting it", "connection", id)
			e.cancel(StopReplaced)
			delete(s.running, id)
			s.running[id] = s.launchLocked(ctx, id, c, fp, e.done)
			continue
		}
		if _, ok := s.locks[id]; !ok {
			l, err := instancelock.Acquire(s.store.LockPath(id))
			var ce *instancelock.ContendedError
			switch {
			case errors.As(err, &ce):
				if initial {
					return ce // the caller stops what started and exits
				}
				s.warnOnce(id, "connection is served by another opengeni-agent; skipping", "holder", ce.Holder())
				continue
			case err != nil:
				s.warnOnce(id, "instance lock unavailable; serving without it", "err", err)
			default:
				s.locks[id] = l
			}
		}
		var after <-chan struct{}
		if old, ok := s.stopping[id]; ok {
			after = old.done // a quick disconnect + connect: let the old one finish
		}
		delete(s.warned, id)
		s.logger.Info("serving connection", "connection", id, "workspace_id", c.WorkspaceID, "agent_id", c.AgentID, "api", c.APIURL)
		s.running[id] = s.launchLocked(ctx, id, c, fp, after)
	}
	return nil
}

func (s *Supervisor) launchLocked(parent context.Context, id string, c *config.Credentials, fp string, after <-chan struct{}) *served {
	ctx, cancel := context.WithCancelCause(parent)
	e := &served{fp: fp, cancel: cancel, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(e.done)
		if after != nil {
			select {
			case <-after:
			case <-ctx.Done():
				return
			}
		}
		if err := s.serve(ctx, id, c); err != nil {
			s.logger.Error("connection stopped with an error; fix or re-enroll it and it restarts", "connection", id, "err", err)
		}
	}()
	return e
}

// stopLocked cancels a running connection and releases its lock once it has
// finished, unless it came back meanwhile.
func (s *Supervisor) stopLocked(id string, e *served, why agent.StopReason) {
	e.cancel(why)
	delete(s.running, id)
	s.stopping[id] = e
	go func() {
		<-e.done
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.stopping[id] == e {
			delete(s.stopping, id)
		}
		if _, back := s.running[id]; !back {
			if l := s.locks[id]; l != nil {
				_ = l.Release()
				delete(s.locks, id)
			}
		}
	}()
}

func (s *Supervisor) stopAllLocked(why error) {
	for id, e := range s.running {
		e.cancel(why)
		delete(s.running, id)
		s.stopping[id] = e
	}
}

// stopAll stops every connection (GoingOffline with the cause's reason) and
// waits for them, then releases the locks.
func (s *Supervisor) stopAll(why error) {
	s.mu.Lock()
	s.stopAllLocked(why)
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, l := range s.locks {
		_ = l.Release()
		delete(s.locks, id)
	}
}
