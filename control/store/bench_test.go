package store

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkHeartbeatIngest measures heartbeats per second into the store:
// "direct" calls HandleMessage; "nats-workers-N" publishes on
// agent.<ws>.<id>.events and waits for an ingestor with N workers to apply
// them. Heartbeats rotate over 100
// machines, and the clock moves 1 s per event, so every 60th event of a
// machine also appends a series point.
func BenchmarkHeartbeatIngest(b *testing.B) {
	const machines = 100
	setup := func(b *testing.B) (*env, []string, []byte) {
		e := newEnv(b)
		subjects := make([]string, machines)
		for i := range subjects {
			en := e.enroll(b, fmt.Sprintf("pk-%d", i))
			subjects[i] = "agent." + testWS + "." + en.ID + ".events"
		}
		data, err := proto.Marshal(heartbeat("x", 1, &agentpb.MetricsSample{CpuPercent: 10, MemTotalBytes: 1 << 30, Gpus: []*agentpb.GpuSample{{UtilPercent: 1}}}))
		if err != nil {
			b.Fatal(err)
		}
		return e, subjects, data
	}
	b.Run("direct", func(b *testing.B) {
		e, subjects, data := setup(b)
		ctx := ctxT(b)
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			e.clock.Advance(time.Second / machines)
			if err := e.store.HandleMessage(ctx, subjects[i%machines], data); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	// One worker is the old serial ingestion; the default spreads the
	// machines over DefaultIngestWorkers.
	for _, workers := range []int{1, DefaultIngestWorkers} {
		b.Run(fmt.Sprintf("nats-workers-%d", workers), func(b *testing.B) {
			e, subjects, data := setup(b)
			in, err := e.store.IngestWith(e.nc, IngestOptions{Workers: workers})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(in.Close)
			b.ResetTimer()
			n := 0
			for ; b.Loop(); n++ {
				if err := e.nc.Publish(subjects[n%machines], data); err != nil {
					b.Fatal(err)
				}
				if n%1000 == 999 { // keep within the ingest queue
					waitHandled(b, in, uint64(n+1))
				}
			}
			waitHandled(b, in, uint64(n))
			b.StopTimer()
			if in.Failed() != 0 {
				b.Fatalf("%d failed", in.Failed())
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
