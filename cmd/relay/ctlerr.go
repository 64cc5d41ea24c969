package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/devstack"
	"github.com/opengeni/opengeni-agent/internal/natsurl"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// ctlTarget is the platform and machine `relay ctl` talks to, and where
// that came from (for messages that say what to do).
type ctlTarget struct {
	natsURL  string
	natsOpts []nats.Option
	user     string // the NATS user, "" when none is sent
	ws       string
	agentID  string
	dataDir  string
	// dev is the dev platform's ctl.json when the target came from it.
	dev *devstack.CtlFile
	// devErr is why no ctl.json was read (nil when dev is set or the target
	// was given explicitly).
	devErr  error
	timeout time.Duration
}

// redactedURL hides the passwords in a NATS URL list.
func redactedURL(raw string) string { return natsurl.Redact(raw) }

// isAuthFailure reports a refused or expired credential (nats.go's typed
// errors for the server's -ERR).
func isAuthFailure(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// explain turns an op failure into what happened and what to do: the
// platform cannot be reached, the platform refused the credential, the
// machine is offline, reconnecting or slow, or the machine's own error.
func (e *ctlEnv) explain(ctx context.Context, err error) string {
	var ce *control.Error
	if !errors.As(err, &ce) {
		return err.Error()
	}
	t := e.target
	switch {
	case ce.AgentOffline && ce.Cause != nil && isAuthFailure(ce.Cause):
		who := fmt.Sprintf("refused user %q", t.user)
		if t.user == "" {
			who = "wants a credential and none was given"
		}
		hint := "pass the platform's control credential (--nats nats://USER:PASSWORD@HOST:PORT)"
		if t.dev != nil {
			hint = fmt.Sprintf("the control password in %s is not this server's: is another `relay dev` (another data dir) on this port? pass --data-dir",
				filepath.Join(t.dataDir, devstack.CtlFileName))
		}
		return fmt.Sprintf("authentication failed: the platform at %s %s (%v); %s", redactedURL(t.natsURL), who, ce.Cause, hint)
	case ce.AgentOffline && ce.Cause != nil && !errors.Is(ce.Cause, nats.ErrNoResponders):
		return fmt.Sprintf("cannot reach the platform at %s: %v; %s", redactedURL(t.natsURL), ce.Cause, e.reachHint())
	case ce.AgentOffline:
		return e.machineState(ctx, false, "no agent answers on "+control.SubjectFor(t.ws, t.agentID))
	case ce.Code == agentpb.ErrorCode_ERROR_CODE_TIMEOUT:
		return e.machineState(ctx, true, fmt.Sprintf("no answer within %v; --timeout", t.timeout))
	case ce.Code == agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED && t.dev != nil:
		return describe(ce) + fmt.Sprintf("\n  relay dev's machine: restart `relay dev --allow-screen-control`, or run "+
			"`OPENGENI_CONFIG_DIR=%s opengeni-agent consent screen-control on`", filepath.Join(t.dataDir, "agent"))
	}
	return describe(ce)
}

// reachHint says what to check when the platform's NATS is unreachable.
func (e *ctlEnv) reachHint() string {
	t := e.target
	switch {
	case t.dev != nil:
		return fmt.Sprintf("is `relay dev` running with data dir %s? (the URL is from its %s)", t.dataDir, devstack.CtlFileName)
	case t.devErr != nil:
		return fmt.Sprintf("no dev platform in %s (start `relay dev`, or pass --data-dir or --nats)", t.dataDir)
	}
	return "check --nats / OPENGENI_NATS_URL"
}

// machineState names the machine and what the platform's store knows of it
// (dev platform only: ctl reads the last-seen time the platform ingested);
// without it, what the transport said. timedOut: a responder exists but
// did not answer (TIMEOUT), else nobody answers (AGENT_OFFLINE).
func (e *ctlEnv) machineState(ctx context.Context, timedOut bool, transport string) string {
	t := e.target
	name := "machine " + t.agentID
	plain := fmt.Sprintf("%s (workspace %s) is offline: %s", name, t.ws, transport)
	if timedOut {
		plain = fmt.Sprintf("%s (workspace %s) did not answer in time (%s)", name, t.ws, transport)
	}
	enr, err := e.lookupMachine(ctx)
	if err != nil {
		return plain
	}
	now := time.Now()
	switch {
	case enr == nil:
		return fmt.Sprintf("%s is not enrolled in workspace %s on this platform (%s)", name, t.ws, transport)
	case enr.Status != control.EnrollmentActive:
		return fmt.Sprintf("%s is offline: its enrollment is %s (%s)", name, enr.Status, transport)
	case enr.LastSeenAt != nil && enr.WentOfflineAt == nil &&
		control.SelfhostedLiveness(enr, false, now).State == control.StateReconnecting:
		return fmt.Sprintf("%s is reconnecting: last seen %s ago (%s)", name, ago(now, *enr.LastSeenAt), transport)
	case timedOut:
		return plain
	case enr.WentOfflineAt != nil:
		return fmt.Sprintf("%s is offline: it said it was going offline %s ago (%s)", name, ago(now, *enr.WentOfflineAt), transport)
	case enr.LastSeenAt == nil:
		return fmt.Sprintf("%s is offline: it never connected (%s)", name, transport)
	}
	return fmt.Sprintf("%s is offline: last seen %s ago (%s)", name, ago(now, *enr.LastSeenAt), transport)
}

func ago(now, t time.Time) string {
	return now.Sub(t).Round(time.Second).String()
}

// lookupMachine reads the machine's enrollment and liveness from the dev
// platform's store (bound read-only), within a few seconds.
func (e *ctlEnv) lookupMachine(ctx context.Context) (*control.Enrollment, error) {
	t := e.target
	if t.dev == nil {
		return nil, errors.New("not a dev platform")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nc, err := nats.Connect(t.natsURL, append([]nats.Option{nats.Name("relay-ctl-store"), nats.CustomInboxPrefix(control.InboxPrefix),
		nats.Timeout(3 * time.Second)}, t.natsOpts...)...)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, js, store.Options{})
	if err != nil {
		return nil, err
	}
	return st.ControlEnrollment(ctx, t.ws, t.agentID)
}

// describe renders a control error with its code and reason.
func describe(err error) string {
	var ce *control.Error
	if errors.As(err, &ce) {
		s := ce.Message
		if ce.Reason != "" {
			s += " (" + string(ce.Reason) + ")"
		}
		return s + " [" + ce.Code.String() + "]"
	}
	return err.Error()
}
