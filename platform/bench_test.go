package platform

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/control"
)

// BenchmarkExecCluster measures exec ("true") round trips through a 3-node
// cluster against a single server, interleaved in one run so machine load
// hits all alike. Variants:
//
//	single        the embedded server (the baseline)
//	cluster-same  agent and control client on the same node
//	cluster-route agent on node 1, control client on node 2 (one route hop each way)
//
// Reported: p50 and p99 per variant in µs; ns/op is one exec of each.
func BenchmarkExecCluster(b *testing.B) {
	ctx := context.Background()
	type variant struct {
		name string
		sess *control.Session
		lat  []time.Duration
	}
	single := startEmbedded(b)
	sc := pair(b, single)
	runAgent(b, sc, nil)
	vs := []*variant{{name: "single", sess: session(b, single.ControlConnFactory(), sc, 10*time.Second)}}

	c, p := startClusterPlatform(b)
	cc := pair(b, p)
	pinned := *cc
	pinned.NATSURLs = []string{c.nodes[0].srv.ClientURL()} // the agent on node 1 only
	runAgent(b, &pinned, nil)
	dial := func(n int) control.ConnFactory {
		return control.DialNATS(c.nodes[n].srv.ClientURL(), p.ControlNATSOptions()...)
	}
	vs = append(vs, &variant{name: "cluster-same", sess: session(b, dial(0), cc, 10*time.Second)},
		&variant{name: "cluster-route", sess: session(b, dial(1), cc, 10*time.Second)})
	for _, v := range vs {
		waitPing(b, v.sess)
		if _, err := v.sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}}); err != nil {
			b.Fatalf("%s warm-up: %v", v.name, err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, v := range vs {
			t0 := time.Now()
			if _, err := v.sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}}); err != nil {
				b.Fatalf("%s: %v", v.name, err)
			}
			v.lat = append(v.lat, time.Since(t0))
		}
	}
	b.StopTimer()
	for _, v := range vs {
		slices.Sort(v.lat)
		b.ReportMetric(float64(v.lat[len(v.lat)/2].Microseconds()), v.name+"-p50-µs")
		b.ReportMetric(float64(v.lat[len(v.lat)*99/100].Microseconds()), v.name+"-p99-µs")
	}
}
