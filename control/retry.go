package control

import (
	"errors"
	"math/rand/v2"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The next revision's retry policy (control.md §9). v1 has no retries, so a
// session retries only when SessionConfig.Retry is set.
//
//	read-only ops             ping, metrics, fs_stat, fs_list, fs_read
//	never sent (offline       any op, up to 3 retries: nothing reached the machine
//	  detected before send)
//	DRAINING                  exec up to 10, any other op up to 3
//	TIMEOUT                   read-only ops only, once
//	FENCED                    never here: the proxy re-resolves
//	anything else             fails at once
//
// Budgets are per class; each retry is a new request (fresh request_id)
// after floor(j · min(8000, 500·2^attempt)) ms, j uniform in [0, 1).
const (
	retryNeverSent     = 3
	retryDrainingExec  = 10
	retryDrainingOther = 3
	retryTimeoutRead   = 1
)

var readOnlyOps = map[string]bool{"ping": true, "metrics": true, "fs_stat": true, "fs_list": true, "fs_read": true}

// retryClass names the budget err draws from for op, or "" when it is not
// retried.
func retryClass(op string, err error) (class string, budget int) {
	var ce *Error
	if !errors.As(err, &ce) {
		return "", 0
	}
	switch {
	case ce.NeverSent:
		return "never_sent", retryNeverSent
	case ce.Draining && op == "exec":
		return "draining", retryDrainingExec
	case ce.Draining:
		return "draining", retryDrainingOther
	case ce.Code == agentpb.ErrorCode_ERROR_CODE_TIMEOUT && readOnlyOps[op]:
		return "timeout", retryTimeoutRead
	}
	return "", 0
}

// RetryBackoff is the wait before retry number attempt (0-based) with
// jitter j in [0, 1): floor(j · min(8000, 500·2^attempt)) ms.
func RetryBackoff(attempt int, j float64) time.Duration {
	ceiling := 8000.0
	if attempt < 5 {
		ceiling = min(ceiling, 500*float64(int(1)<<attempt))
	}
	return time.Duration(int64(j*ceiling)) * time.Millisecond
}

// Observation is what a session reports once per op to
// SessionConfig.Observer (control.md §9 op observer).
type Observation struct {
	Op         string        // the op's field name, e.g. "exec"
	OK         bool          // outcome ok (false: failed)
	Healed     bool          // ok after at least one retry
	Retries    int           // retries made
	Duration   time.Duration // from the first send to the outcome
	Code       agentpb.ErrorCode
	Reason     UnavailableReason
	NeverSent  bool
	MachineID  string
	FaultClass FaultClass // "" when OK
	ReplyBytes int        // the encoded size of the successful reply
}

// observe calls the observer, which must never break an op: a panic in it
// is swallowed.
func (s *Session) observe(o Observation) {
	if s.observer == nil {
		return
	}
	defer func() { _ = recover() }()
	s.observer(o)
}

// jitter is j in [0, 1) for RetryBackoff.
func (s *Session) jitter() float64 {
	if s.jitterFn != nil {
		return s.jitterFn()
	}
	return rand.Float64()
}
