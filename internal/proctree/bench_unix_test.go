//go:build unix

package proctree

import (
	osexec "os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStartGuardedVsPlain alternates a plain start of true in its own
// process group with a guarded one (startGuarded, Wait, release), so both see the
// same load; guard-extra-ns is the p50 difference, the per-exec cost of
// kill-on-drop.
func BenchmarkStartGuardedVsPlain(b *testing.B) {
	run := func(guarded bool) time.Duration {
		cmd := osexec.Command("true")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		t0 := time.Now()
		if guarded {
			g, err := startGuarded(cmd)
			if err != nil {
				b.Fatal(err)
			}
			defer g.release()
		} else if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	run(true) // the guard starts once per process, not per exec
	var plain, guarded []time.Duration
	for b.Loop() {
		plain = append(plain, run(false))
		guarded = append(guarded, run(true))
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	mp, mg := med(plain), med(guarded)
	b.ReportMetric(float64(mp.Nanoseconds()), "plain-p50-ns")
	b.ReportMetric(float64(mg.Nanoseconds()), "guarded-p50-ns")
	b.ReportMetric(float64((mg - mp).Nanoseconds()), "guard-extra-ns")
}
