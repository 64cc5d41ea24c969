package e2e

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// switchedObserver forwards to the audit log only while on: one agent
// serves both series of the benchmark, so the only difference between
// them is the audit record.
type switchedObserver struct {
	on    atomic.Bool
	inner agent.Observer
}

func (s *switchedObserver) ObserveOp(req *agentpb.ControlRequest, resp *agentpb.ControlResponse, op string,
	start time.Time, took time.Duration, in, out int) {
	if s.on.Load() {
		s.inner.ObserveOp(req, resp, op, start, took, in, out)
	}
}

func (s *switchedObserver) ObservePause(p bool, until time.Time) { s.inner.ObservePause(p, until) }

// BenchmarkAuditOverhead: an exec of `true` and a 1 MiB fs_write with the
// audit log on and off, interleaved in one run on one agent (the order
// alternates each iteration). Target: the p50 with the log on within 3% of
// the p50 with it off.
func BenchmarkAuditOverhead(b *testing.B) {
	log := openAuditLog(b, b.TempDir())
	sw := &switchedObserver{inner: log.For(auditConn)}
	e := newEnv(b, []natstest.Option{natstest.MaxPayload(8 << 20)}, func(o *agent.Options) { o.Observer = sw })
	s := e.session(b, nil)
	ctx := context.Background()
	data := make([]byte, 1<<20)
	rand.Read(data)
	execTrue := func() {
		if r, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}}); err != nil || r.GetExitCode() != 0 {
			b.Fatal(r, err)
		}
	}
	write := func() {
		if _, err := s.WriteFile(ctx, "/workspace/1m.bin", data, nil); err != nil {
			b.Fatal(err)
		}
	}
	var execOn, execOff, writeOn, writeOff latencies
	measure := func(on bool, into *latencies, f func()) {
		sw.on.Store(on)
		into.time(f)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		first := i%2 == 0
		measure(first, pick(first, &execOn, &execOff), execTrue)
		measure(!first, pick(!first, &execOn, &execOff), execTrue)
		measure(first, pick(first, &writeOn, &writeOff), write)
		measure(!first, pick(!first, &writeOn, &writeOff), write)
	}
	b.StopTimer()
	b.ReportMetric(float64(p50(execOff).Nanoseconds()), "exec-off-p50-ns")
	b.ReportMetric(float64(p50(execOn).Nanoseconds()), "exec-on-p50-ns")
	b.ReportMetric(100*(float64(p50(execOn))/float64(p50(execOff))-1), "exec-overhead-%")
	b.ReportMetric(float64(p50(writeOff).Nanoseconds()), "write1m-off-p50-ns")
	b.ReportMetric(float64(p50(writeOn).Nanoseconds()), "write1m-on-p50-ns")
	b.ReportMetric(100*(float64(p50(writeOn))/float64(p50(writeOff))-1), "write1m-overhead-%")
}

func pick(on bool, a, b *latencies) *latencies {
	if on {
		return a
	}
	return b
}
