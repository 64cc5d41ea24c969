//go:build unix

package pty

import (
	"slices"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkKeystrokeEcho measures one keystroke's round trip: viewer →
// relay → agent → PTY → program (cat in raw mode, echoing each byte) → PTY
// → agent → relay → viewer, all on loopback. Reports p50/p99 in µs.
func BenchmarkKeystrokeEcho(b *testing.B) {
	h := newHarness(b)
	resp := h.open(&agentpb.PtyOpenRequest{Command: []string{"/bin/sh", "-c", "stty raw -echo; echo ready; exec cat"}})
	v := h.viewer(resp)
	v.WaitContains("ready")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		before := v.Len()
		start := time.Now()
		v.Send("k")
		for v.Len() <= before {
			select {
			case <-v.Wake():
			case <-time.After(10 * time.Second):
				b.Fatal("no echo")
			}
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}
