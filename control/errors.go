package control

import (
	"strconv"
	"strings"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// UnavailableReason says why a connected machine cannot serve a capability
// right now (the reference's SelfhostedUnavailableReason). The empty value is
// "no reason" (the reference's null).
type UnavailableReason string

// The reasons of control.md §2.3 and §3.
const (
	ReasonNone               UnavailableReason = ""
	ReasonAgentOffline       UnavailableReason = "agent_offline"
	ReasonAgentReconnecting  UnavailableReason = "agent_reconnecting"
	ReasonConsentRequired    UnavailableReason = "consent_required"
	ReasonDisplayUnavailable UnavailableReason = "display_unavailable"
)

// Error is an op failure reported by (or synthesized for) a machine: the
// reference's SelfhostedControlError. Match it with errors.As.
//
// Flags not implied by Code are false. OSNotFound means "the path or ref is
// missing on the machine", never "the machine is gone".
type Error struct {
	Code      agentpb.ErrorCode
	Reason    UnavailableReason
	Message   string
	Retryable bool

	Fenced       bool // FENCED: the epoch moved on; re-resolve the session
	Draining     bool // DRAINING: the agent is shutting down; retry elsewhere/later
	AgentOffline bool // AGENT_OFFLINE: no agent answered
	OSNotFound   bool // NOT_FOUND: a path or ref is missing on the machine
	// PayloadTooLarge (a next-revision flag): the request or its reply does
	// not fit one transport message; Detail has encoded_bytes and max_payload.
	PayloadTooLarge bool
	// NeverSent (a next-revision flag): the control side found the machine
	// offline before sending (detail "_never_sent" = "1"), so nothing reached
	// it and any op may be retried.
	NeverSent bool

	Detail map[string]string // never nil
	// RequestID is the request_id of the ControlRequest that failed, when
	// known.
	RequestID string
	// Cause is the transport condition behind an AGENT_OFFLINE that
	// [NATSRPC] synthesized (a failed dial such as nats.ErrNoServers or
	// nats.ErrAuthorization, nats.ErrNoResponders, a dropped connection);
	// nil otherwise. It is never on the wire: the synthesized AgentError is
	// exactly control.md §2.2's. errors.Is/As reach it through Unwrap.
	Cause error
}

// Unwrap returns [Error.Cause], so callers can tell "the platform is
// unreachable" from "the machine is offline".
func (e *Error) Unwrap() error { return e.Cause }

// Error implements error: "selfhosted <CODE>[ (<reason>)]: <message>".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("selfhosted ")
	b.WriteString(codeName(e.Code))
	if e.Reason != ReasonNone {
		b.WriteString(" (")
		b.WriteString(string(e.Reason))
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(e.Message)
	return b.String()
}

// codeName is the enum name without its ERROR_CODE_ prefix, or the number for
// a code this build does not know.
func codeName(c agentpb.ErrorCode) string {
	if name, ok := agentpb.ErrorCode_name[int32(c)]; ok {
		return strings.TrimPrefix(name, "ERROR_CODE_")
	}
	return "CODE_" + strconv.Itoa(int(c))
}

// DetailNeverSent marks a synthesized error whose request never left the
// control side.
const DetailNeverSent = "_never_sent"

// FromAgentError maps an AgentError onto an [*Error] (control.md §2.3):
//
//	AGENT_OFFLINE     agent_offline       retryable false  AgentOffline
//	TIMEOUT           agent_reconnecting  retryable true
//	CONSENT_REQUIRED  consent_required    retryable false
//	DRAINING          -                   retryable true   Draining
//	FENCED            -                   retryable true   Fenced
//	NOT_FOUND         -                   as sent          OSNotFound
//	anything else     -                   as sent
//
// An empty message becomes "agent error (<code number>)". A nil AgentError
// maps to nil.
func FromAgentError(ae *agentpb.AgentError) *Error {
	if ae == nil {
		return nil
	}
	e := &Error{
		Code:      ae.GetCode(),
		Message:   ae.GetMessage(),
		Retryable: ae.GetRetryable(),
		Detail:    make(map[string]string, len(ae.GetDetail())),
	}
	if e.Message == "" {
		e.Message = "agent error (" + strconv.Itoa(int(e.Code)) + ")"
	}
	for k, v := range ae.GetDetail() {
		e.Detail[k] = v
	}
	e.NeverSent = e.Detail[DetailNeverSent] == "1"
	switch e.Code {
	case agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE:
		e.Reason, e.Retryable, e.AgentOffline = ReasonAgentOffline, false, true
	case agentpb.ErrorCode_ERROR_CODE_TIMEOUT:
		e.Reason, e.Retryable = ReasonAgentReconnecting, true
	case agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED:
		e.Reason, e.Retryable = ReasonConsentRequired, false
	case agentpb.ErrorCode_ERROR_CODE_DRAINING:
		e.Retryable, e.Draining = true, true
	case agentpb.ErrorCode_ERROR_CODE_FENCED:
		e.Retryable, e.Fenced = true, true
	case agentpb.ErrorCode_ERROR_CODE_NOT_FOUND:
		e.OSNotFound = true
	case agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE:
		e.PayloadTooLarge = true
	}
	return e
}

// IsProviderNotFound reports whether err means "the sandbox no longer
// exists, create a new one". For a connected machine that is never true, so
// it always returns false, whatever err is: a user's machine is never "gone".
// An offline agent is AGENT_OFFLINE (back off and retry later), and an OS
// NOT_FOUND is a missing path, not a missing box. A lease layer that treated
// either as NotFound would cold-create a rival box for someone's computer.
func IsProviderNotFound(err error) bool {
	_ = err
	return false
}
