package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/audit"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/instancelock"
	"github.com/opengeni/opengeni-agent/agent/service"
	"github.com/opengeni/opengeni-agent/agent/supervisor"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

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

// runStored serves every stored connection (agent/supervisor), enrolling
// first when nothing is stored yet.
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
	sup := supervisor.New(supervisor.Options{Store: store, Logger: logger, Serve: agentServe(store, o, logger)})
	if err := sup.Start(ctx); err != nil {
		var ce *instancelock.ContendedError
		if errors.As(err, &ce) {
			fmt.Fprintf(stderr, "opengeni-agent is already running (%s) — this instance will exit\n", ce.Holder())
			return 0
		}
		logger.Error("agent exited with an error", "err", err)
		return 1
	}
	logger.Info("agent online — press Ctrl-C to stop", "connections", sup.Count())
	sup.Run(ctx)
	logger.Info("agent stopped")
	return 0
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
func agentServe(store *config.Store, o storedRunOptions, logger *slog.Logger) supervisor.ServeFunc {
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
