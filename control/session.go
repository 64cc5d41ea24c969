package control

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"

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
	}, nil
}

// Subject is the agent's request subject.
func (s *Session) Subject() string { return s.subject }

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
// result is a PROTOCOL error.
func (s *Session) call(ctx context.Context, op func(*agentpb.ControlRequest), timeout time.Duration) (*agentpb.ControlResponse, error) {
	req := s.newRequest(op)
	if timeout <= 0 {
		timeout = s.timeout
	}
	var resp *agentpb.ControlResponse
	var cause, err error
	if nr, ok := s.rpc.(*NATSRPC); ok {
		resp, cause, err = nr.request(ctx, s.subject, req, timeout)
	} else {
		resp, err = s.rpc.Request(ctx, s.subject, req, timeout)
	}
	if err != nil {
		return nil, err
	}
	resp, err = checkResponse(req, resp)
	return resp, attachCause(err, cause)
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

// newRequest builds a request with a fresh id and the session epoch.
func (s *Session) newRequest(op func(*agentpb.ControlRequest)) *agentpb.ControlRequest {
	req := &agentpb.ControlRequest{RequestId: uuid.NewString(), Epoch: s.epoch}
	op(req)
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
