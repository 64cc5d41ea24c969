package relay

import (
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// RevocationSource tells the relay which machines lost their enrollment.
// The relay keeps no state of its own: a source learns revocations from the
// platform (relay/revocation watches the enrollments bucket over NATS).
type RevocationSource interface {
	// Revoked reports whether the machine's enrollment is revoked. A non-nil
	// error means the source cannot tell (not yet synced, or disconnected):
	// the relay then refuses agent opens (fail closed), retryably.
	Revoked(ws, agent string) (bool, error)
	// OnRevoke registers f, called with every machine whose enrollment is
	// revoked from now on. f may be called from any goroutine.
	OnRevoke(f func(ws, agent string))
}

// GenerationSource is a RevocationSource that also knows each machine's
// current credential generation (control.md §9); the relay then refuses an
// agent token minted for an older one (issued before a revocation that was
// later undone by re-activation).
type GenerationSource interface {
	CredentialGeneration(ws, agent string) int
}

// Rejection and close texts of revocation.
const (
	msgRevoked            = "machine enrollment revoked"
	msgRevocationUnknown  = "revocation state unavailable; retry later"
	msgStaleGeneration    = "agent token of an older credential generation (the machine was re-paired); use the current credentials"
	revokedCloseOnChannel = agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED
)

// admitMachine applies the revocation source to an open for (ws, agent):
// "" admits; otherwise the rejection text and whether it is retryable.
// Only agents need the revocation state to be known: a viewer of a machine
// the source cannot vouch for reaches nothing until that agent is admitted.
func (s *Server) admitMachine(ws, agent string, role agentpb.StreamRole) (reject string, retryable bool) {
	src := s.opts.Revocations
	if src == nil {
		return "", false
	}
	revoked, err := src.Revoked(ws, agent)
	switch {
	case revoked:
		return msgRevoked, false
	case err != nil && role == agentpb.StreamRole_STREAM_ROLE_AGENT:
		return msgRevocationUnknown, true
	}
	return "", false
}

// RevokeAgent closes every live channel of the machine (ws, agent): its
// agent and every viewer get a StreamClose FENCED "machine enrollment
// revoked" and are dropped. It returns the number of channels closed.
// A RevocationSource in Options calls it by itself.
func (s *Server) RevokeAgent(ws, agent string) int {
	n := s.reg.closeMachine(ws, agent, revokedCloseOnChannel, msgRevoked)
	if n > 0 {
		s.log.Info("closed channels of a revoked machine", "ws", ws, "agent", agent, "channels", n)
	}
	return n
}
