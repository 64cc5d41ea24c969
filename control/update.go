package control

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// AgentUpdateApply asks the machine to update itself (the next revision's
// fleet update, agent.md §9). The agent answers at once: accepted, or not
// (current_version == target_version: it already runs the target), or a
// FENCED error when expected_current_version/expected_current_sha256 do not
// match the running binary (retryable=false), or when another update is in
// progress (retryable). An accepted update runs in the background and
// reports AgentUpdateProgress events on the machine's events subjects; the
// binary it installed is confirmed by the next Hello's completed_update_*.
// A repeated operation_id returns the first answer and starts nothing.
func (s *Session) AgentUpdateApply(ctx context.Context, req *agentpb.AgentUpdateApplyRequest) (*agentpb.AgentUpdateApplyResponse, error) {
	return invokeCase[*agentpb.ControlResponse_AgentUpdateApply](ctx, s, "agentUpdateApply", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_AgentUpdateApply{AgentUpdateApply: req}
	}, func(resp *agentpb.ControlResponse) *agentpb.AgentUpdateApplyResponse {
		return orEmpty(resp.GetAgentUpdateApply())
	})
}

// UpdateOutcome is how a machine's update ended.
type UpdateOutcome string

const (
	// UpdateUpdated: the machine restarted onto the target and its Hello
	// confirmed the operation (completed_update_operation_id).
	UpdateUpdated UpdateOutcome = "updated"
	// UpdateUpToDate: the machine already ran the target; nothing started.
	UpdateUpToDate UpdateOutcome = "up_to_date"
	// UpdateRolledBack: the new binary failed its health gate and the
	// previous one was restored (it still runs the old version).
	UpdateRolledBack UpdateOutcome = "rolled_back"
	// UpdateFailed: refused or failed without touching the binary (see
	// ErrorCode, Retryable, Err), or no outcome within the timeout.
	UpdateFailed UpdateOutcome = "failed"
	// UpdateFenced: the machine does not run the expected version/binary.
	UpdateFenced UpdateOutcome = "fenced"
)

// RolloutMachine is one machine of a rollout.
type RolloutMachine struct {
	Session *Session
	// ExpectedVersion and ExpectedSHA256 fence the update to the binary
	// the platform believes the machine runs (from its Hello); "" skips.
	ExpectedVersion string
	ExpectedSHA256  string
}

// RolloutOptions configure RollOut.
type RolloutOptions struct {
	// Conn follows progress: RollOut subscribes to each machine's events
	// and hello subjects (v1 and connection instance) on it. Required.
	Conn *nats.Conn
	// TargetVersion is the version to install; "" takes what the channel
	// manifest offers (then only a newer build is accepted).
	TargetVersion  string
	Channel        string // "" = the machine's own update channel
	ReleaseBaseURL string // "" = the machine's default release origin
	// OperationID names the rollout; each machine's operation id is
	// OperationID + ":" + agentID, so re-running a rollout with the same id
	// re-attaches instead of starting anything twice. Default: a new UUID.
	OperationID string
	Parallelism int           // machines updated at once; default 4
	Timeout     time.Duration // per machine, from the request to its outcome; default 15m
	// Progress, when set, sees every progress event once per stage
	// (concurrently for different machines).
	Progress func(machine string, p *agentpb.AgentUpdateProgress)
}

// RolloutResult is one machine's outcome.
type RolloutResult struct {
	Machine     string // agent id
	OperationID string
	Outcome     UpdateOutcome
	// Answer is the machine's AgentUpdateApply answer (nil when it refused
	// or did not answer).
	Answer *agentpb.AgentUpdateApplyResponse
	// Version and BinarySHA256 are what the machine runs at the end, when
	// known: the confirming Hello's for UpdateUpdated, the answer's current
	// ones otherwise.
	Version      string
	BinarySHA256 string
	// Stages are the stages seen, in order.
	Stages    []agentpb.AgentUpdateStage
	ErrorCode string // the FAILED event's error_code, or the AgentError code name
	Retryable bool
	Err       error
}

// RollOut updates machines, at most Parallelism at once, following each
// one's progress to its outcome. The results are in the order of machines.
// Only invalid options return an error; every machine's problem is in its
// result.
func RollOut(ctx context.Context, machines []RolloutMachine, o RolloutOptions) ([]RolloutResult, error) {
	if o.Conn == nil {
		return nil, errors.New("control: RollOut: Conn is required")
	}
	for i, m := range machines {
		if m.Session == nil {
			return nil, fmt.Errorf("control: RollOut: machine %d has no session", i)
		}
	}
	if o.OperationID == "" {
		o.OperationID = uuid.NewString()
	}
	if o.Parallelism <= 0 {
		o.Parallelism = 4
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Minute
	}
	results := make([]RolloutResult, len(machines))
	sem := make(chan struct{}, o.Parallelism)
	var wg sync.WaitGroup
	for i, m := range machines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				results[i] = RolloutResult{Machine: m.Session.AgentID(), Outcome: UpdateFailed, Err: ctx.Err(), Retryable: true}
				return
			}
			results[i] = rollOutOne(ctx, m, o)
		}()
	}
	wg.Wait()
	return results, nil
}

// rollOutOne applies the update to one machine and follows it.
func rollOutOne(ctx context.Context, m RolloutMachine, o RolloutOptions) RolloutResult {
	s := m.Session
	opID := o.OperationID + ":" + s.AgentID()
	res := RolloutResult{Machine: s.AgentID(), OperationID: opID, Outcome: UpdateFailed}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	// Subscribe before asking, so no stage is missed. Both the v1 and the
	// connection-instance subjects: a v1-era agent publishes on the first,
	// a next-revision one on the second, ours on both (deduplicated below).
	msgs := make(chan *nats.Msg, 256)
	var subs []*nats.Subscription
	defer func() {
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}()
	ws, id := s.WorkspaceID(), s.AgentID()
	for _, subj := range []string{
		subject.Of(ws, id, subject.Events), subject.Connection(ws, id, "*") + "." + subject.Events,
		subject.Of(ws, id, subject.Hello), subject.Connection(ws, id, "*") + "." + subject.Hello,
	} {
		sub, err := o.Conn.ChanSubscribe(subj, msgs)
		if err != nil {
			res.Err = fmt.Errorf("follow %s: %w", subj, err)
			return res
		}
		subs = append(subs, sub)
	}
	if err := o.Conn.FlushWithContext(ctx); err != nil {
		res.Err = fmt.Errorf("follow progress: %w", err)
		return res
	}

	answer, err := s.AgentUpdateApply(ctx, &agentpb.AgentUpdateApplyRequest{
		OperationId: opID, TargetVersion: o.TargetVersion, Channel: o.Channel, ReleaseBaseUrl: o.ReleaseBaseURL,
		ExpectedCurrentVersion: m.ExpectedVersion, ExpectedCurrentSha256: m.ExpectedSHA256,
	})
	if err != nil {
		res.Err = err
		var ce *Error
		if errors.As(err, &ce) {
			res.ErrorCode, res.Retryable = ce.Code.String(), ce.Retryable
			// The session marks every FENCED retryable (re-resolve); the
			// agent's detail says which fence: the expected binary is a
			// verdict, an update in progress is worth a retry.
			if r := ce.Detail["reason"]; ce.Code == agentpb.ErrorCode_ERROR_CODE_FENCED && (r == "version_mismatch" || r == "sha256_mismatch") {
				res.Outcome, res.Retryable = UpdateFenced, false
			}
		}
		return res
	}
	res.Answer = answer
	res.Version, res.BinarySHA256 = answer.GetCurrentVersion(), answer.GetCurrentSha256()
	target := o.TargetVersion
	switch {
	case !answer.GetAccepted() && target != "" && sameVersion(answer.GetCurrentVersion(), target):
		res.Outcome = UpdateUpToDate
		return res
	case !answer.GetAccepted():
		res.Err = fmt.Errorf("machine %s did not accept the update (runs %s)", id, answer.GetCurrentVersion())
		return res
	case target != "" && sameVersion(answer.GetCurrentVersion(), target):
		// A repeat of an operation this binary is the result of.
		res.Outcome = UpdateUpdated
		return res
	}

	seen := map[agentpb.AgentUpdateStage]bool{}
	expectedSHA, restarting := "", false
	for {
		select {
		case <-ctx.Done():
			res.Err = fmt.Errorf("machine %s: no outcome (last stage %s): %w", id, lastStage(res.Stages), ctx.Err())
			res.Retryable = true
			return res
		case msg := <-msgs:
			if strings.HasSuffix(msg.Subject, "."+subject.Hello) {
				var h agentpb.Hello
				if proto.Unmarshal(msg.Data, &h) != nil || !restarting {
					continue // a Hello before RESTARTING is a reconnect of the old process
				}
				if h.GetCompletedUpdateOperationId() != opID {
					res.Version, res.BinarySHA256 = h.GetAgentVersion(), h.GetBinarySha256()
					res.Err = fmt.Errorf("machine %s came back on %s without completing operation %s", id, h.GetAgentVersion(), opID)
					return res
				}
				res.Version, res.BinarySHA256 = h.GetAgentVersion(), h.GetBinarySha256()
				if expectedSHA != "" && !strings.EqualFold(h.GetBinarySha256(), expectedSHA) {
					res.Err = fmt.Errorf("machine %s runs binary %s, not the released %s", id, h.GetBinarySha256(), expectedSHA)
					return res
				}
				res.Outcome = UpdateUpdated
				return res
			}
			var ev agentpb.AgentEvent
			if proto.Unmarshal(msg.Data, &ev) != nil {
				continue
			}
			p := ev.GetAgentUpdateProgress()
			if p.GetOperationId() != opID || seen[p.GetStage()] {
				continue
			}
			seen[p.GetStage()] = true
			res.Stages = append(res.Stages, p.GetStage())
			if p.GetExpectedBinarySha256() != "" {
				expectedSHA = p.GetExpectedBinarySha256()
			}
			if o.Progress != nil {
				o.Progress(id, p)
			}
			switch p.GetStage() {
			case agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING:
				restarting = true
			case agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED:
				res.ErrorCode, res.Retryable = p.GetErrorCode(), p.GetRetryable()
				res.Err = fmt.Errorf("machine %s: update %s failed: %s", id, opID, p.GetErrorCode())
				if p.GetRolledBack() {
					res.Outcome = UpdateRolledBack
				}
				return res
			}
		}
	}
}

func lastStage(st []agentpb.AgentUpdateStage) string {
	if len(st) == 0 {
		return "none"
	}
	return st[len(st)-1].String()
}

func sameVersion(a, b string) bool {
	return strings.TrimPrefix(strings.TrimSpace(a), "v") == strings.TrimPrefix(strings.TrimSpace(b), "v")
}
