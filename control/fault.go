package control

import (
	"errors"
	"fmt"
	"strings"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// FaultClass sorts an op failure for people and dashboards (control.md §9
// fault rendering).
type FaultClass string

// The fault classes.
const (
	FaultOffline         FaultClass = "offline"
	FaultDraining        FaultClass = "draining"
	FaultPayloadTooLarge FaultClass = "payload_too_large"
	FaultReconnecting    FaultClass = "reconnecting"
	FaultConsent         FaultClass = "consent"
	FaultNotFound        FaultClass = "not_found"
	FaultFenced          FaultClass = "fenced"
	FaultOS              FaultClass = "os"
	FaultStream          FaultClass = "stream"
	FaultProtocol        FaultClass = "protocol"
	FaultUnspecified     FaultClass = "unspecified"
)

// Infrastructure reports whether the class is a fault of the path to the
// machine (transport, agent lifecycle) rather than an answer about the
// user's request: not_found, consent and fenced are not.
func (c FaultClass) Infrastructure() bool {
	return c != FaultNotFound && c != FaultConsent && c != FaultFenced
}

// ClassifyFault returns the class of err ("" for nil); an error that is not
// an [*Error] is unspecified.
func ClassifyFault(err error) FaultClass {
	if err == nil {
		return ""
	}
	var ce *Error
	if !errors.As(err, &ce) {
		return FaultUnspecified
	}
	switch ce.Code {
	case agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE:
		return FaultOffline
	case agentpb.ErrorCode_ERROR_CODE_DRAINING:
		return FaultDraining
	case agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE:
		return FaultPayloadTooLarge
	case agentpb.ErrorCode_ERROR_CODE_TIMEOUT:
		return FaultReconnecting
	case agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED:
		return FaultConsent
	case agentpb.ErrorCode_ERROR_CODE_NOT_FOUND:
		return FaultNotFound
	case agentpb.ErrorCode_ERROR_CODE_FENCED:
		return FaultFenced
	case agentpb.ErrorCode_ERROR_CODE_OS:
		return FaultOS
	case agentpb.ErrorCode_ERROR_CODE_STREAM:
		return FaultStream
	case agentpb.ErrorCode_ERROR_CODE_PROTOCOL:
		return FaultProtocol
	}
	return FaultUnspecified
}

type faultText struct{ headline, layer, preserved, try, retry string }

var faultTexts = map[FaultClass]faultText{
	FaultOffline: {"the machine is offline", "transport: no agent is subscribed for this machine",
		"everything on the machine; nothing was run", "check that the agent runs and is paired (opengeni-agent status on the machine)",
		"retry later; safe to retry at once only when the request was never sent"},
	FaultDraining: {"the agent is shutting down", "agent lifecycle: it refuses new work while it drains",
		"ops already running finish; this one was not started", "retry in a few seconds (the agent restarts or updates)", "retryable"},
	FaultPayloadTooLarge: {"the request or its reply does not fit one message", "transport: the NATS max payload",
		"the machine's state; a reply that did not fit was discarded", "use the chunked helpers (ReadFileAll/WriteFileAll) or a smaller range", "not retryable as is"},
	FaultReconnecting: {"the machine did not answer in time", "transport: the agent may be reconnecting or busy",
		"unknown: the op may have run", "retry read-only ops; check the machine's liveness before repeating a write", "retry once for read-only ops"},
	FaultConsent: {"the machine's owner has not allowed this", "machine policy: the owner's consent gate",
		"everything; nothing was done", "ask the owner to grant consent on the machine (opengeni-agent consent)", "not retryable until consent changes"},
	FaultNotFound: {"a path or ref does not exist on the machine", "the request itself",
		"everything; nothing was changed", "check the path", "not retryable"},
	FaultFenced: {"the session's route or epoch moved on", "routing: a newer session or connection owns the machine",
		"everything; this op was not run", "re-resolve the session and retry", "retry after re-resolving"},
	FaultOS: {"the machine's operating system refused the op", "the machine",
		"whatever the op did before failing", "read the message: a permission, a full disk, a busy file", "not retryable as is"},
	FaultStream: {"the stream relay failed", "stream plane: the relay or its channel",
		"the terminal or desktop session on the machine", "reopen the stream", "retryable"},
	FaultProtocol: {"the agent and the control plane disagree on the protocol", "protocol",
		"everything; the reply was unusable", "update the agent or the control plane", "not retryable"},
	FaultUnspecified: {"the op failed", "unknown", "unknown", "read the message", "not retryable"},
}

// RenderFault explains err to a person: a headline "[connected machine] …"
// and four lines (What happened, Which layer, What was preserved, What to
// try) with the control code and the class's retry verdict. nil renders as
// "".
func RenderFault(err error) string {
	class := ClassifyFault(err)
	if class == "" {
		return ""
	}
	t := faultTexts[class]
	code := "none"
	var ce *Error
	if errors.As(err, &ce) {
		code = codeName(ce.Code)
		if ce.NeverSent {
			t.preserved = "everything: the request was never sent"
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[connected machine] %s\n", t.headline)
	fmt.Fprintf(&b, "What happened: %s (control code %s)\n", err.Error(), code)
	fmt.Fprintf(&b, "Which layer: %s\n", t.layer)
	fmt.Fprintf(&b, "What was preserved: %s\n", t.preserved)
	fmt.Fprintf(&b, "What to try: %s; retry: %s", t.try, t.retry)
	return b.String()
}
