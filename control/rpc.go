// Package control is the platform side of opengeni-agent: the library a
// control plane uses to drive connected machines over NATS.
//
// The layers, bottom up:
//
//   - [RPC] sends one ControlRequest to an agent subject and returns its
//     ControlResponse. Liveness conditions (no connection, no responders,
//     timeouts) are never Go errors: they come back as a synthesized
//     AgentError (AGENT_OFFLINE, TIMEOUT), exactly as an agent-sent error.
//     [NATSRPC] is the NATS implementation.
//   - [Session] is one machine seen through the "/workspace" virtual root:
//     exec, files, images, ping, metrics and exposed ports. Every op that the
//     agent answers with an AgentError returns a [*Error].
//   - Chunked helpers ([Session.ReadFileAll], [Session.WriteFileAll]) move
//     files bigger than one NATS message.
//
// A user's machine is never "gone": an offline agent is AGENT_OFFLINE, and
// [IsProviderNotFound] is always false.
package control

import (
	"context"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// RPC is the transport seam: send one ControlRequest to subject and wait up to
// timeout for its ControlResponse.
//
// Implementations never return an error for liveness conditions. An absent
// connection or no responders yields [OfflineResponse]; a request that timed
// out yields [TimeoutResponse]. Only the caller's own context cancellation
// ([context.Canceled]) or a request that cannot be encoded returns an error.
type RPC interface {
	Request(ctx context.Context, subject string, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error)
}

// RPCFunc adapts a function to [RPC].
type RPCFunc func(ctx context.Context, subject string, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error)

// Request calls f.
func (f RPCFunc) Request(ctx context.Context, subject string, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error) {
	return f(ctx, subject, req, timeout)
}

// PayloadLimiter is implemented by an [RPC] that knows the largest message its
// transport carries. The chunked helpers size their chunks from it.
type PayloadLimiter interface {
	// MaxPayload returns the transport's max message size in bytes. It may
	// resolve a lazy connection; when the limit is unknown it returns
	// [DefaultMaxPayload].
	MaxPayload(ctx context.Context) int64
}

// DefaultMaxPayload is NATS's default max payload (1 MiB), assumed when the
// transport does not say.
const DefaultMaxPayload int64 = 1 << 20

// Synthesized transport messages (control.md §2.2).
const (
	OfflineMessage = "no agent responded (offline)"
	TimeoutMessage = "the agent did not respond in time"
)

// SubjectFor returns the v1 request subject of an agent:
// "agent.<workspaceID>.<agentID>.rpc". The agent's subscription on it is the
// registry: "online" means "the subject has a responder".
func SubjectFor(workspaceID, agentID string) string {
	return "agent." + workspaceID + "." + agentID + ".rpc"
}

// OfflineResponse is the ControlResponse synthesized when no agent can
// answer: AGENT_OFFLINE, not retryable. Only the control side ever produces
// AGENT_OFFLINE; an agent never sends it.
func OfflineResponse(requestID string) *agentpb.ControlResponse {
	return synthesized(requestID, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE, OfflineMessage, false)
}

// TimeoutResponse is the ControlResponse synthesized when a responder exists
// but did not answer in time: TIMEOUT, retryable (the machine may be
// reconnecting).
func TimeoutResponse(requestID string) *agentpb.ControlResponse {
	return synthesized(requestID, agentpb.ErrorCode_ERROR_CODE_TIMEOUT, TimeoutMessage, true)
}

func synthesized(requestID string, code agentpb.ErrorCode, msg string, retryable bool) *agentpb.ControlResponse {
	return &agentpb.ControlResponse{
		RequestId: requestID,
		Error: &agentpb.AgentError{
			Code:      code,
			Message:   msg,
			Retryable: retryable,
			Detail:    map[string]string{},
		},
	}
}
