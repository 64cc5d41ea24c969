//go:build unix

package exec

import (
	"bytes"
	"context"
	"log/slog"
	osexec "os/exec"
	"slices"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkExecTrue is the agent's time and allocations per exec; its
// fork/exec baseline is in BenchmarkExecVsForkInterleaved, measured under the
// same load.
func BenchmarkExecTrue(b *testing.B) {
	s := New(Options{Root: workspace.Root{Dir: b.TempDir()}, Logger: slog.New(slog.DiscardHandler)})
	req := &agentpb.ExecRequest{Command: []string{"true"}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.Exec(ctx, req)
		if err != nil || resp.ExitCode != 0 {
			b.Fatal(resp, err)
		}
	}
}

// BenchmarkExecVsForkInterleaved alternates the handler and a plain fork/exec
// in one loop so both see the same load; ratio is the handler's p50 over the
// baseline's.
func BenchmarkExecVsForkInterleaved(b *testing.B) {
	s := New(Options{Root: workspace.New(b.TempDir()), Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	req := &agentpb.ExecRequest{Command: []string{"true"}}
	var base, piped, ex []time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := osexec.Command("true").Run(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		var o, e bytes.Buffer
		c := osexec.Command("true")
		c.Stdout, c.Stderr = &o, &e
		if err := c.Run(); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := s.Exec(ctx, req); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		base, piped, ex = append(base, t1.Sub(t0)), append(piped, t2.Sub(t1)), append(ex, t3.Sub(t2))
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	mb, mp, me := med(base), med(piped), med(ex)
	b.ReportMetric(float64(mb.Nanoseconds()), "fork-p50-ns")
	b.ReportMetric(float64(mp.Nanoseconds()), "fork-piped-p50-ns")
	b.ReportMetric(float64(me.Nanoseconds()), "exec-p50-ns")
	b.ReportMetric(float64(me)/float64(mb), "ratio")
}
