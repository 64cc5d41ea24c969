package opstream

import (
	"context"
	"encoding/hex"
	"errors"
	"hash"

	"github.com/zeebo/blake3"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Failure codes of OpExit.failure_code.
const (
	FailureTimeout   = "TIMEOUT"
	FailureCancelled = "CANCELLED"
	FailureStopping  = "AGENT_STOPPING"
	FailureOutputCut = "OUTPUT_CUT"
	FailureOS        = "OS"
	FailureDigest    = "DIGEST_MISMATCH"
)

// channelSink is one output channel of an op: every byte is hashed,
// counted and appended as data frames (blocking on credit).
type channelSink struct {
	o     *op
	ch    agentpb.OpChannel
	name  string
	hash  hash.Hash
	total uint64
}

func newSink(o *op, ch agentpb.OpChannel, name string) *channelSink {
	return &channelSink{o: o, ch: ch, name: name, hash: blake3.New()}
}

func (c *channelSink) Write(b []byte) (int, error) {
	c.hash.Write(b)
	c.total += uint64(len(b))
	if err := c.o.appendData(c.ch, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (c *channelSink) record(exit *agentpb.OpExit) {
	exit.Digests[c.name] = hex.EncodeToString(c.hash.Sum(nil))
	exit.Totals[c.name] = c.total
}

func newExit() *agentpb.OpExit {
	return &agentpb.OpExit{Digests: map[string]string{}, Totals: map[string]uint64{}}
}

// failure names why an op's context ended.
func failure(ctx context.Context, exit *agentpb.OpExit) {
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errDeadline):
		exit.TimedOut, exit.FailureCode = true, FailureTimeout
	case errors.Is(cause, errCancelled):
		exit.Cancelled, exit.FailureCode = true, FailureCancelled
	case errors.Is(cause, errStopping):
		exit.Cancelled, exit.FailureCode = true, FailureStopping
	}
}

// startExec spawns the command now (a spawn failure is the OpStart's
// error) and returns what waits for it and ends the op. timeout_ms of the
// ExecRequest is ignored over op-stream: OpStart.deadline_ms bounds it, and
// 0 means unbounded (control.md §9).
func (s *Service) startExec(o *op, req *agentpb.ExecRequest) (func(), error) {
	if s.opts.Exec == nil {
		return nil, agenterr.Unsupported("op_start exec is not served by this agent")
	}
	stdout := newSink(o, agentpb.OpChannel_OP_CHANNEL_STDOUT, "stdout")
	stderr := newSink(o, agentpb.OpChannel_OP_CHANNEL_STDERR, "stderr")
	p, err := s.opts.Exec.Start(o.ctx, req, stdout, stderr)
	if err != nil {
		return nil, err
	}
	return func() {
		ended := p.Wait()
		exit := newExit()
		exit.ExitCode = ended.ExitCode
		exit.DurationMs = uint64(ended.Duration.Milliseconds())
		stdout.record(exit)
		stderr.record(exit)
		if ended.Killed || o.ctx.Err() != nil {
			failure(o.ctx, exit)
		}
		if exit.FailureCode == "" && (ended.StdoutCut || ended.StderrCut) {
			// A background process kept a stream open after the command
			// exited; its later output is not the command's.
			exit.FailureCode = FailureOutputCut
		}
		o.end(exit)
	}, nil
}
