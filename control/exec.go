package control

import (
	"context"
	"math"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// ExecOptions is one shell command run the way the platform's exec tool runs
// it.
type ExecOptions struct {
	// Cmd is the command line, run by the machine's shell.
	Cmd string
	// Workdir is the cwd, a platform path mapped by MachinePath; "" is the
	// working directory.
	Workdir string
}

// ExecResult is the outcome of [Session.Exec]. A non-zero exit is not an
// error.
type ExecResult struct {
	Output   string // = Stdout
	Stdout   string
	Stderr   string
	ExitCode int
}

// Exec runs opts.Cmd through the machine's shell: command [cmd], shell true,
// cwd = MachinePath(workdir), no env, no stdin, no agent-side timeout (the
// session timeout bounds the round trip).
func (s *Session) Exec(ctx context.Context, opts ExecOptions) (*ExecResult, error) {
	r, err := s.exec(ctx, "exec", &agentpb.ExecRequest{
		Command: []string{opts.Cmd},
		Shell:   true,
		Cwd:     s.path(opts.Workdir),
		Env:     map[string]string{},
	}, 0)
	if err != nil {
		return nil, err
	}
	out := string(r.GetStdout())
	return &ExecResult{
		Output:   out,
		Stdout:   out,
		Stderr:   string(r.GetStderr()),
		ExitCode: int(r.GetExitCode()),
	}, nil
}

// ExecCommand is Exec returning stdout only.
func (s *Session) ExecCommand(ctx context.Context, cmd, workdir string) (string, error) {
	r, err := s.Exec(ctx, ExecOptions{Cmd: cmd, Workdir: workdir})
	if err != nil {
		return "", err
	}
	return r.Stdout, nil
}

// ExecRequestOptions is the full exec request.
type ExecRequestOptions struct {
	// Argv is the program and its arguments (or, with Shell, one command line).
	Argv []string
	// Shell runs Argv joined by spaces through the machine's shell.
	Shell bool
	// Workdir is mapped by MachinePath.
	Workdir string
	// Env is added to the agent's environment for this command.
	Env map[string]string
	// Stdin is fed to the command.
	Stdin []byte
	// Timeout is the agent-side deadline (0: none). The round trip is given
	// the longer of the session timeout and Timeout plus a 5s grace, so the
	// agent's own timed_out reply wins the race.
	Timeout time.Duration
}

// execGrace is how much longer than the command's own deadline the control
// side waits for the reply.
const execGrace = 5 * time.Second

// ExecArgs runs a command with every exec field under the caller's control
// and returns the agent's raw reply (exit code, output bytes, timed_out,
// duration).
func (s *Session) ExecArgs(ctx context.Context, opts ExecRequestOptions) (*agentpb.ExecResponse, error) {
	var ms uint32
	var rt time.Duration
	if opts.Timeout > 0 {
		ms = uint32(min(opts.Timeout.Milliseconds(), int64(math.MaxUint32)))
		if ms == 0 {
			ms = 1
		}
		rt = max(s.timeout, opts.Timeout+execGrace)
	}
	env := opts.Env
	if env == nil {
		env = map[string]string{}
	}
	return s.exec(ctx, "execArgs", &agentpb.ExecRequest{
		Command:   opts.Argv,
		Shell:     opts.Shell,
		Cwd:       s.path(opts.Workdir),
		Env:       env,
		Stdin:     opts.Stdin,
		TimeoutMs: ms,
	}, rt)
}

func (s *Session) exec(ctx context.Context, method string, req *agentpb.ExecRequest, timeout time.Duration) (*agentpb.ExecResponse, error) {
	resp, err := s.call(ctx, func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_Exec{Exec: req}
	}, timeout)
	if err != nil {
		return nil, err
	}
	return resultAs[*agentpb.ControlResponse_Exec](method, resp, func(resp *agentpb.ControlResponse) *agentpb.ExecResponse {
		return orEmpty(resp.GetExec())
	})
}
