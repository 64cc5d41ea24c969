package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/audit"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/instancelock"
	"github.com/opengeni/opengeni-agent/agent/service"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// reloadInterval is how often `run` re-reads the connections directory.
const reloadInterval = 2 * time.Second

// storedRunOptions are the run flags that apply to every stored connection.
type storedRunOptions struct {
	WorkspaceID   string // for enrolling when nothing is stored yet
	MachineName   string
	Channel       string
	WorkspaceRoot string
	// VirtualDesktop and Display configure the desktop ops.
	VirtualDesktop bool
	Display        string
	Limits         agentLimits
	// SelfUpdate serves fleet updates for every connection (one binary).
	SelfUpdate *agent.SelfUpdate
	// AuditFlags configure the owner's audit log; Audit, when set, is the
	// open log every connection records into.
	AuditFlags auditFlags
	Audit      *audit.Log
}

// serveFunc serves one connection until ctx ends (agent.Agent.Run).
type serveFunc func(ctx context.Context, id string, c *config.Credentials) error

// runStored serves every stored connection, one agent.Agent each, each
// under its instance lock, reloading the directory every 2 s: a new
// connection starts, a removed one stops (announcing GoingOffline), a
// re-enrolled one restarts with its new credentials.
func runStored(ctx context.Context, store *config.Store, o storedRunOptions, stdout, stderr io.Writer, logger *slog.Logger) int {
	if !store.Enrolled() {
		_, err := enrollConnection(ctx, store, enrollParams{
			APIURL: apiURL(), WorkspaceID: o.WorkspaceID, MachineName: o.MachineName, Channel: o.Channel,
			Token: envEnrollToken(),
		}, stdout, logger)
		if err != nil {
			logger.Error("agent exited with an error", "err", err)
			return 1
		}
	}
	if o.Audit == nil && !o.AuditFlags.Off {
		var err error
		if o.Audit, err = openAudit(store.Dir(), o.AuditFlags, logger); err != nil {
			logger.Error("agent exited with an error", "err", err)
			return 1
		}
		defer closeAudit(o.Audit)
	}
	sup := newSupervisor(store, logger, agentServe(store, o, logger))
	if ce := sup.reconcile(ctx, true); ce != nil {
		sup.stopAll(nil)
		fmt.Fprintf(stderr, "opengeni-agent is already running (%s) — this instance will exit\n", ce.Holder())
		return 0
	}
	logger.Info("agent online — press Ctrl-C to stop", "connections", sup.count())
	t := time.NewTicker(reloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sup.stopAll(context.Cause(ctx))
			logger.Info("agent stopped")
			return 0
		case <-t.C:
			sup.reconcile(ctx, false)
		}
	}
}

// runStoredCLI is `run` without --nats-url: the stored connections, under
// the same signal and service-manager handling as a single connection.
func runStoredCLI(o storedRunOptions, stderr io.Writer, logger *slog.Logger) int {
	store, err := openStore(stderr)
	if err != nil {
		logger.Error("agent exited with an error", "err", err)
		return 1
	}
	ctx, stop := stopContext()
	defer stop()
	ctx, restart := newUpdateRestart(ctx, logger)
	if code, done := restart.rolledBackAtStart(logger); done {
		return code
	}
	o.SelfUpdate = restart.su
	code := 0
	err = service.RunManaged(ctx,
		agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "service stopped"},
		agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_HOST_SHUTDOWN, Message: "host shutting down"},
		restart.body(func(ctx context.Context) error {
			code = runStored(ctx, store, o, os.Stdout, stderr, logger)
			return nil
		}))
	return restart.finish(code, err, logger)
}

// agentServe builds and runs an agent.Agent for one stored connection.
func agentServe(store *config.Store, o storedRunOptions, logger *slog.Logger) serveFunc {
	return func(ctx context.Context, id string, c *config.Credentials) error {
		opts := agent.Options{
			SelfUpdate:     o.SelfUpdate,
			Servers:        c.NATSURLs,
			Token:          c.NATSBearer,
			WorkspaceID:    c.WorkspaceID,
			AgentID:        c.AgentID,
			WorkspaceRoot:  o.WorkspaceRoot,
			MachineName:    o.MachineName,
			UpdateChannel:  c.UpdateChannel,
			ResumeToken:    c.ResumeToken,
			HeldEpoch:      c.LastKnownEpoch,
			RelayURL:       c.RelayURL,
			RelayToken:     c.RelayToken,
			APIURL:         c.APIURL,
			VirtualDesktop: o.VirtualDesktop,
			Display:        o.Display,
			MaxQueuedOps:   o.Limits.MaxQueuedOps,
			PtyIdleTimeout: o.Limits.PtyIdleTimeout,
			MaxPtys:        o.Limits.MaxPtys,
			Consent: func() agent.Consent {
				w, sc := store.Consent(id)
				return agent.Consent{WholeMachine: w, ScreenControl: sc}
			},
			Pause:  pauseSwitch(store),
			Logger: logger.With("connection", id),
			// `status` shows what the link is doing right now.
			OnState: func(st agent.ConnState) {
				if b, err := json.Marshal(st); err == nil {
					_ = store.WriteLinkState(id, b)
				}
			},
		}
		if o.Audit != nil {
			opts.Observer = o.Audit.For(audit.Connection{ID: id, Workspace: c.WorkspaceID, Agent: c.AgentID, Platform: c.APIURL})
		}
		a, err := agent.New(opts)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	}
}

// served is one running connection.
type served struct {
	fp     string
	cancel context.CancelCauseFunc
	done   chan struct{}
}

type supervisor struct {
	store  *config.Store
	logger *slog.Logger
	serve  serveFunc

	mu       sync.Mutex
	running  map[string]*served
	stopping map[string]*served
	locks    map[string]*instancelock.Lock
	warned   map[string]string // id → last logged problem, to log once
	wg       sync.WaitGroup
}

func newSupervisor(store *config.Store, logger *slog.Logger, serve serveFunc) *supervisor {
	return &supervisor{store: store, logger: logger, serve: serve,
		running: map[string]*served{}, stopping: map[string]*served{},
		locks: map[string]*instancelock.Lock{}, warned: map[string]string{}}
}

func (s *supervisor) count() int {
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

func (s *supervisor) warnOnce(id, msg string, args ...any) {
	if s.warned[id] == msg {
		return
	}
	s.warned[id] = msg
	s.logger.Warn(msg, append([]any{"connection", id}, args...)...)
}

var (
	stopRemoved  = agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "connection removed (opengeni-agent disconnect)"}
	stopReplaced = agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "credentials replaced (re-enrolled); reconnecting"}
)

// reconcile makes the running set match the directory. With initial, a
// contended lock stops everything and is returned (the caller exits);
// later, a contended connection is skipped and retried on the next pass.
func (s *supervisor) reconcile(ctx context.Context, initial bool) *instancelock.ContendedError {
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
			s.stopLocked(id, e, stopRemoved)
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
			e.cancel(stopReplaced)
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

func (s *supervisor) launchLocked(parent context.Context, id string, c *config.Credentials, fp string, after <-chan struct{}) *served {
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
func (s *supervisor) stopLocked(id string, e *served, why agent.StopReason) {
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

func (s *supervisor) stopAllLocked(why error) {
	for id, e := range s.running {
		e.cancel(why)
		delete(s.running, id)
		s.stopping[id] = e
	}
}

// stopAll stops every connection (GoingOffline with the cause's reason) and
// waits for them, then releases the locks.
func (s *supervisor) stopAll(why error) {
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
