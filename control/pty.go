package control

import (
	"context"
	"maps"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// PtyOptions describe a terminal to open. The zero value is the machine's
// default shell in the session's working directory, 80×24, xterm-256color.
type PtyOptions struct {
	Command    []string          // argv; empty: the default shell
	Cwd        string            // raw cwd on the machine; "": the session's working directory
	Env        map[string]string // added to the agent's environment
	Cols, Rows uint32            // 0: 80×24
	Term       string            // "": xterm-256color
	// ScopeID (next revision): a non-empty scope reattaches the machine's
	// live terminal of that scope instead of starting a new shell.
	ScopeID string
}

// PtyOpen opens a terminal on the machine. The agent answers once the
// terminal's relay channel is live; the reply carries the pty id (which is
// the channel id) and the channel key a viewer dials.
func (s *Session) PtyOpen(ctx context.Context, o PtyOptions) (*agentpb.PtyOpenResponse, error) {
	return s.ptyOpen(ctx, "ptyOpen", o)
}

// ptyOpen is PtyOpen; method names the caller in an unexpected-result error.
func (s *Session) ptyOpen(ctx context.Context, method string, o PtyOptions) (*agentpb.PtyOpenResponse, error) {
	cwd := o.Cwd
	if cwd == "" {
		cwd = s.workingDir
	}
	term := o.Term
	if term == "" {
		term = "xterm-256color"
	}
	env := maps.Clone(o.Env)
	if env == nil {
		env = map[string]string{}
	}
	cmd := o.Command
	if cmd == nil {
		cmd = []string{}
	}
	return invokeCase[*agentpb.ControlResponse_PtyOpen](ctx, s, method, func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_PtyOpen{PtyOpen: &agentpb.PtyOpenRequest{
			Command: cmd, Cwd: cwd, Env: env, Cols: o.Cols, Rows: o.Rows, Term: term, ScopeId: o.ScopeID,
		}}
	}, (*agentpb.ControlResponse).GetPtyOpen)
}

// PtyWrite writes programmatic input to a terminal and returns the bytes
// written. Interactive input normally rides the relay instead.
func (s *Session) PtyWrite(ctx context.Context, ptyID string, data []byte) (uint64, error) {
	return invokeCase[*agentpb.ControlResponse_PtyWrite](ctx, s, "ptyWrite", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_PtyWrite{PtyWrite: &agentpb.PtyWriteRequest{PtyId: ptyID, Data: data}}
	}, func(resp *agentpb.ControlResponse) uint64 { return resp.GetPtyWrite().GetBytesWritten() })
}

// PtyResize sets a terminal's size (the agent clamps to 1..65535).
func (s *Session) PtyResize(ctx context.Context, ptyID string, cols, rows uint32) error {
	return invokeAck[*agentpb.ControlResponse_PtyResize](ctx, s, "ptyResize", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_PtyResize{PtyResize: &agentpb.PtyResizeRequest{PtyId: ptyID, Cols: cols, Rows: rows}}
	})
}

// PtyClose ends a terminal (hang-up, then kill) and returns the process's
// exit code, or -1 when it could not be reaped in time.
func (s *Session) PtyClose(ctx context.Context, ptyID string) (int32, error) {
	return invokeCase[*agentpb.ControlResponse_PtyClose](ctx, s, "ptyClose", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_PtyClose{PtyClose: &agentpb.PtyCloseRequest{PtyId: ptyID}}
	}, func(resp *agentpb.ControlResponse) int32 { return resp.GetPtyClose().GetExitCode() })
}
