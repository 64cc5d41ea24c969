package exec

import (
	"context"
	"io"
	"os"
	osexec "os/exec"
	"sync/atomic"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/capture"
	"github.com/opengeni/opengeni-agent/internal/proctree"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Process is a command started by Start whose output streams to writers as
// it arrives (op-stream exec). Its lifetime is the context given to Start:
// when it ends, the whole process tree is killed.
type Process struct {
	cmd    *osexec.Cmd
	pipes  *capture.Pipes
	tree   *proctree.Tree
	killed atomic.Bool
	ctx    context.Context
	grace  time.Duration
	start  time.Time
	argv0  string
}

// Ended is how a streamed command ended.
type Ended struct {
	ExitCode int32 // -1 when killed by a signal
	// Killed: the tree was killed because the context ended (a deadline or
	// a cancel; the caller knows which).
	Killed               bool
	Duration             time.Duration
	StdoutCut, StderrCut bool // reading stopped early (a background process held the stream, or a writer failed)
}

// Start runs req.Command with its stdout and stderr going to the writers as
// they arrive (see capture.AttachWriters: a blocking writer blocks the
// command, never drops its bytes). Unlike Exec it applies no timeout: the
// caller bounds the run with ctx, whose end kills the whole process tree.
// Errors are for commands that could not start (NOT_FOUND for a missing
// program or cwd, PROTOCOL for a malformed request).
func (s *Service) Start(ctx context.Context, req *agentpb.ExecRequest, stdout, stderr io.Writer) (*Process, error) {
	cmd, argv0, cwd, err := s.command(ctx, req)
	if err != nil {
		return nil, err
	}
	p := &Process{ctx: ctx, grace: s.pipeGrace, cmd: cmd, argv0: argv0}
	p.pipes, err = capture.AttachWriters(p.cmd, stdout, stderr)
	if err != nil {
		return nil, agenterr.FromIO("spawn "+p.argv0, err)
	}
	p.tree = newTree(p.cmd, &p.killed)
	p.cmd.WaitDelay = s.pipeGrace
	p.start = time.Now()
	err = p.tree.Start()
	p.pipes.Started()
	if err != nil {
		p.pipes.Drain(ctx, 0)
		p.tree.Release()
		if _, serr := os.Stat(cwd); serr != nil {
			return nil, agenterr.FromIO("spawn "+p.argv0+": cwd "+cwd, serr)
		}
		return nil, agenterr.FromIO("spawn "+p.argv0, err)
	}
	return p, nil
}

// Pid is the command's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Wait waits for the command to exit and for its output to be read to the
// end (everything it wrote before exiting is delivered; a stream a
// background process keeps open and silent is cut after the pipe grace).
func (p *Process) Wait() Ended {
	defer p.tree.Release()
	_ = p.tree.Wait()
	p.pipes.Drain(p.ctx, p.grace)
	out, errs := p.pipes.Cut()
	e := Ended{ExitCode: -1, Killed: p.killed.Load(), Duration: time.Since(p.start), StdoutCut: out, StderrCut: errs}
	if p.cmd.ProcessState != nil {
		e.ExitCode = int32(p.cmd.ProcessState.ExitCode())
	}
	return e
}
