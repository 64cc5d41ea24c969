package agent

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkFloodHeapHeld measures the heap a flood of 1 MiB fs_writes holds
// while every slot is taken: with the queue bound, the excess is refused
// at once and its payload freed; without it, every request waits in memory.
// Reported as heap-MiB (in use while saturated, after a GC).
func BenchmarkFloodHeapHeld(b *testing.B) {
	const flood = 256
	for range b.N {
		s := natstest.Start(b, natstest.MaxPayload(8<<20))
		nc := natstest.Connect(b, s)
		hellos := subscribe(b, nc, testSubject("hello"))
		release := make(chan struct{})
		ra := startAgent(b, s.ClientURL(), func(o *Options) { o.MaxConcurrentOps = 8 }, func(a *Agent) {
			blocking := NewDispatcher(nil, 1)
			Handle(blocking, "fs_write", Heavy, func(_ context.Context, r *agentpb.FsWriteRequest) (*agentpb.FsWriteResponse, error) {
				<-release
				return &agentpb.FsWriteResponse{}, nil
			})
			a.dispatch.handlers["fs_write"] = blocking.handlers["fs_write"]
		})
		next(b, hellos, &agentpb.Hello{})
		replies := make(chan *nats.Msg, flood)
		if _, err := nc.ChanSubscribe("reply.flood", replies); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range flood {
			req := &agentpb.ControlRequest{RequestId: fmt.Sprint(i), Op: &agentpb.ControlRequest_FsWrite{
				FsWrite: &agentpb.FsWriteRequest{Path: fmt.Sprint(i), Content: bytes.Repeat([]byte{byte(i)}, 1<<20)}}}
			if err := nc.PublishRequest(ra.Subject("rpc"), "reply.flood", mustMarshal(b, req)); err != nil {
				b.Fatal(err)
			}
		}
		natstest.Eventually(b, 30*time.Second, func() error {
			if got := ra.dispatch.Active() + len(replies); got < flood {
				return fmt.Errorf("%d of %d requests reached the agent", got, flood)
			}
			return nil
		})
		runtime.GC()
		var held runtime.MemStats
		runtime.ReadMemStats(&held)
		b.ReportMetric(float64(held.HeapInuse-min(held.HeapInuse, before.HeapInuse))/(1<<20), "heap-MiB")
		b.ReportMetric(float64(len(replies)), "refused")
		close(release)
	}
}
