package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BackendID names connected machines among sandbox backends.
const BackendID = "selfhosted"

// DefaultTimeout is the per-op request timeout of a session (the reference's
// SELFHOSTED_DEFAULT_TIMEOUT_MS).
const DefaultTimeout = 30 * time.Second

// SessionConfig builds a [Session] (the reference's SelfhostedSessionDeps).
type SessionConfig struct {
	WorkspaceID string // required: the subject scope
	AgentID     string // required: the enrollment id (agent id == enrollment id)
	RPC         RPC    // required: the transport

	// Relay is where viewers reach streams (ResolveExposedPort).
	Relay RelayConfig
	// Epoch is stamped on every request; 0 means "no fence" (probes,
	// negotiation).
	Epoch uint32
	// Timeout bounds each op; 0 means DefaultTimeout (30s).
	Timeout time.Duration
	// Environment is the run environment. It is mirrored into the session's
	// state only and never sent to the machine.
	Environment map[string]string
	// WorkingDir is the base of every path and cwd (see MachinePath).
	WorkingDir string
	// Instances, when set, resolves the machine's live connection instance
	// before each op (control.md §9): requests go to
	// agent.<ws>.<id>.connection.<inst>.rpc, or to the v1 subject while it
	// reports none. A store.Store implements it.
	Instances InstanceResolver
	// Retry turns on the next revision's retry policy (control.md §9, see
	// retry.go); v1 control planes do not retry.
	Retry bool
	// Observer receives one Observation per op (the next revision's op
	// observer); it must not block, and a panic in it is swallowed.
	Observer func(Observation)
	// ResourcePolicy is carried by every exec and git as
	// ControlRequest.resource_policy (control.md §9): per-op memory and CPU
	// limits. A machine that cannot enforce it answers UNSUPPORTED (see
	// AdmitOperation to know before sending). Nil: none.
	ResourcePolicy *agentpb.OperationResourcePolicy
}

// InstanceResolver reports the live connection instance of a machine, ""
// when it has none (a v1 agent, or offline).
type InstanceResolver interface {
	LiveInstance(ctx context.Context, ws, agent string) (string, error)
}

// InstanceResolverFunc adapts a function to [InstanceResolver].
type InstanceResolverFunc func(ctx context.Context, ws, agent string) (string, error)

// LiveInstance calls f.
func (f InstanceResolverFunc) LiveInstance(ctx context.Context, ws, agent string) (string, error) {
	return f(ctx, ws, agent)
}

// Session drives one connected machine. It is safe for concurrent use.
type Session struct {
	ws, agent  string
	subject    string
	rpc        RPC
	relay      RelayConfig
	epoch      uint32
	timeout    time.Duration
	env        map[string]string
	workingDir string
	instances  InstanceResolver
	retry      bool
	observer   func(Observation)
	policy     *agentpb.OperationResourcePolicy
	noOpStream bool                                       // WithoutOpStream
	jitterFn   func() float64                             // tests
	sleep      func(context.Context, time.Duration) error // tests
}

// NewSession validates cfg and returns a session. It does not contact the
// machine: an unreachable machine surfaces at the first op as AGENT_OFFLINE.
func NewSession(cfg SessionConfig) (*Session, error) {
	switch {
	case cfg.WorkspaceID == "":
		return nil, errors.New("control: NewSession: WorkspaceID is required")
	case cfg.AgentID == "":
		return nil, errors.New("control: NewSession: AgentID is required")
	case cfg.RPC == nil:
		return nil, errors.New("control: NewSession: RPC is required")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	env := maps.Clone(cfg.Environment)
	if env == nil {
		env = map[string]string{}
	}
	return &Session{
		ws:         cfg.WorkspaceID,
		agent:      cfg.AgentID,
		subject:    SubjectFor(cfg.WorkspaceID, cfg.AgentID),
		rpc:        cfg.RPC,
		relay:      cfg.Relay,
		epoch:      cfg.Epoch,
		timeout:    timeout,
		env:        env,
		workingDir: cfg.WorkingDir,
		instances:  cfg.Instances,
		retry:      cfg.Retry,
		observer:   cfg.Observer,
		policy:     cfg.ResourcePolicy,
		sleep:      backoff.SleepCtx,
	}, nil
}

// Subject is the agent's v1 request subject.
func (s *Session) Subject() string { return s.subject }

// route is where the next op goes: the live instance's rpc subject, or the
// v1 subject when no resolver is set or it knows no instance.
func (s *Session) route(ctx context.Context) (subj, inst string, err error) {
	if s.instances == nil {
		return s.subject, "", nil
	}
	inst, err = s.instances.LiveInstance(ctx, s.ws, s.agent)
	if err != nil {
		return "", "", FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE,
			Message: "cannot resolve the machine's connection: " + err.Error()})
	}
	if inst == "" {
		return s.subject, "", nil
	}
	return subject.Connection(s.ws, s.agent, inst) + "." + subject.RPC, inst, nil
}

// rerouted turns a transport failure of an op sent to instance inst into
// FENCED when the machine's live instance changed meanwhile (control.md §9:
// a route change mid-flight is FENCED, so the caller re-resolves rather
// than reading "offline" or "timeout").
func (s *Session) rerouted(ctx context.Context, inst string, err error) error {
	var ce *Error
	if inst == "" || !errors.As(err, &ce) ||
		(ce.Code != agentpb.ErrorCode_ERROR_CODE_TIMEOUT && ce.Code != agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE) {
		return err
	}
	now, rerr := s.instances.LiveInstance(ctx, s.ws, s.agent)
	if rerr != nil || now == inst {
		return err
	}
	fe := FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_FENCED, Retryable: true,
		Message: fmt.Sprintf("the machine's connection changed while the op was in flight (instance %s → %s); re-resolve and retry", inst, orNone(now)),
		Detail:  map[string]string{"sent_instance": inst, "live_instance": now}})
	fe.RequestID = ce.RequestID
	return fe
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// AgentID is the machine's agent (enrollment) id; it is also the instance id.
func (s *Session) AgentID() string { return s.agent }

// WorkspaceID is the workspace the machine is enrolled in.
func (s *Session) WorkspaceID() string { return s.ws }

// Epoch is the fence stamped on every request.
func (s *Session) Epoch() uint32 { return s.epoch }

// WorkingDir is the base of every mapped path.
func (s *Session) WorkingDir() string { return s.workingDir }

// Environment returns a copy of the run environment; never nil.
func (s *Session) Environment() map[string]string { return maps.Clone(s.env) }

// SerializeState is what a platform persists to re-bind the session later:
// {"agentId": <id>} and nothing else.
func (s *Session) SerializeState() map[string]string {
	return map[string]string{"agentId": s.agent}
}

// SupportsPty reports false: terminals ride the relay (ResolveExposedPort),
// not the SDK's exec-with-tty path.
func (s *Session) SupportsPty() bool { return false }

// MaxPayload is the largest message the transport carries (DefaultMaxPayload
// when the RPC does not say).
func (s *Session) MaxPayload(ctx context.Context) int64 {
	if pl, ok := s.rpc.(PayloadLimiter); ok {
		if n := pl.MaxPayload(ctx); n > 0 {
			return n
		}
	}
	return DefaultMaxPayload
}

func (s *Session) path(p string) string { return MachinePath(p, s.workingDir) }

// call is the common envelope (control.md §1.3): a fresh request id and the
// session epoch, an AgentError becomes *Error, and a reply without error or
// result is a PROTOCOL error. With Retry set it applies the retry policy
// (each retry a new request), and it reports the outcome to the observer.
func (s *Session) call(ctx context.Context, op func(*agentpb.ControlRequest), timeout time.Duration) (*agentpb.ControlResponse, error) {
	if timeout <= 0 {
		timeout = s.timeout
	}
	start := time.Now()
	spent := map[string]int{}
	retries := 0
	for {
		req := s.newRequest(op)
		resp, err := s.send(ctx, req, timeout)
		if err == nil || !s.retry {
			s.report(opLabel(req), start, retries, resp, err)
			return resp, err
		}
		class, budget := retryClass(opLabel(req), err)
		if class == "" || spent[class] >= budget {
			s.report(opLabel(req), start, retries, resp, err)
			return resp, err
		}
		if serr := s.sleep(ctx, RetryBackoff(retries, s.jitter())); serr != nil {
			s.report(opLabel(req), start, retries, resp, err)
			return nil, err // the caller gave up: the last real answer stands
		}
		spent[class]++
		retries++
	}
}

// send is one request on the op's route.
func (s *Session) send(ctx context.Context, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error) {
	subj, inst, err := s.route(ctx)
	if err != nil {
		return nil, err
	}
	var resp *agentpb.ControlResponse
	var cause error
	if nr, ok := s.rpc.(*NATSRPC); ok {
		resp, cause, err = nr.request(ctx, subj, req, timeout)
	} else {
		resp, err = s.rpc.Request(ctx, subj, req, timeout)
	}
	if err != nil {
		return nil, s.rerouted(ctx, inst, err)
	}
	resp, err = checkResponse(req, resp)
	if err != nil {
		return nil, s.rerouted(ctx, inst, attachCause(err, cause))
	}
	return resp, nil
}

// attachCause keeps the transport error behind a synthesized AGENT_OFFLINE
// as the *Error's Cause (the wire-visible error is unchanged).
func attachCause(err, cause error) error {
	var e *Error
	if cause != nil && errors.As(err, &e) && e.AgentOffline {
		e.Cause = cause
	}
	return err
}

// report tells the observer how one op ended.
func (s *Session) report(op string, start time.Time, retries int, resp *agentpb.ControlResponse, err error) {
	if s.observer == nil {
		return
	}
	o := Observation{Op: op, OK: err == nil, Healed: err == nil && retries > 0, Retries: retries,
		Duration: time.Since(start), MachineID: s.agent}
	if err == nil {
		o.ReplyBytes = proto.Size(resp)
	} else {
		o.FaultClass = ClassifyFault(err)
		var ce *Error
		if errors.As(err, &ce) {
			o.Code, o.Reason, o.NeverSent = ce.Code, ce.Reason, ce.NeverSent
		}
	}
	s.observe(o)
}

// newRequest builds a request with a fresh id and the session epoch.
func (s *Session) newRequest(op func(*agentpb.ControlRequest)) *agentpb.ControlRequest {
	req := &agentpb.ControlRequest{RequestId: uuid.NewString(), Epoch: s.epoch}
	op(req)
	if s.policy != nil && (req.GetExec() != nil || req.GetGit() != nil) {
		req.ResourcePolicy = s.policy
	}
	return req
}

// checkResponse applies the envelope rules of control.md §1.3.
func checkResponse(req *agentpb.ControlRequest, resp *agentpb.ControlResponse) (*agentpb.ControlResponse, error) {
	if resp == nil {
		resp = &agentpb.ControlResponse{RequestId: req.RequestId}
	}
	if ae := resp.GetError(); ae != nil {
		e := FromAgentError(ae)
		e.RequestID = req.RequestId
		return nil, e
	}
	if resp.GetResult() == nil {
		e := FromAgentError(&agentpb.AgentError{
			Code:    agentpb.ErrorCode_ERROR_CODE_PROTOCOL,
			Message: "agent returned an empty control response",
		})
		e.RequestID = req.RequestId
		return nil, e
	}
	return resp, nil
}

// invokeCase runs one op and returns get(resp) when the reply's result case
// is C (the oneof wrapper, e.g. *agentpb.ControlResponse_FsRead); any other
// case is the plain "unexpected result" error.
func invokeCase[C, T any](ctx context.Context, s *Session, method string, op func(*agentpb.ControlRequest), get func(*agentpb.ControlResponse) T) (T, error) {
	resp, err := s.call(ctx, op, 0)
	if err != nil {
		var zero T
		return zero, err
	}
	return resultAs[C](method, resp, get)
}

// invokeAck is invokeCase for an op whose result carries nothing.
func invokeAck[C any](ctx context.Context, s *Session, method string, op func(*agentpb.ControlRequest)) error {
	_, err := invokeCase[C](ctx, s, method, op, func(*agentpb.ControlResponse) struct{} { return struct{}{} })
	return err
}

// resultAs returns get(resp) when resp's result case is C, else the plain
// "unexpected result" error.
func resultAs[C, T any](method string, resp *agentpb.ControlResponse, get func(*agentpb.ControlResponse) T) (T, error) {
	if _, ok := resp.GetResult().(C); !ok {
		var zero T
		return zero, unexpected(method, resp)
	}
	return get(resp), nil
}

// orEmpty is p, or a new empty message when the agent sent none.
func orEmpty[T any](p *T) *T {
	if p == nil {
		return new(T)
	}
	return p
}

// bytesWritten reads an fs_write reply.
func bytesWritten(resp *agentpb.ControlResponse) uint64 { return resp.GetFsWrite().GetBytesWritten() }

// unexpected is the plain error for a reply whose result case does not match
// the op: "selfhosted <method>: unexpected result <case>".
func unexpected(method string, resp *agentpb.ControlResponse) error {
	return fmt.Errorf("selfhosted %s: unexpected result %s", method, resultCase(resp))
}

var (
	requestOp  = (&agentpb.ControlRequest{}).ProtoReflect().Descriptor().Oneofs().ByName("op")
	responseOp = (&agentpb.ControlResponse{}).ProtoReflect().Descriptor().Oneofs().ByName("result")
)

// opLabel is the op's field name ("fs_read"), or "none".
func opLabel(req *agentpb.ControlRequest) string {
	if fd := whichOneof(req.ProtoReflect(), requestOp); fd != nil {
		return string(fd.Name())
	}
	return "none"
}

// resultCase is the result's case in the reference's spelling ("fsRead").
func resultCase(resp *agentpb.ControlResponse) string {
	if fd := whichOneof(resp.ProtoReflect(), responseOp); fd != nil {
		return fd.JSONName()
	}
	return "none"
}

func whichOneof(m protoreflect.Message, od protoreflect.OneofDescriptor) protoreflect.FieldDescriptor {
	if od == nil {
		return nil
	}
	return m.WhichOneof(od)
}
