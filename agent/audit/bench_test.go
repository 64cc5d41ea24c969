package audit

import (
	"context"
	"log/slog"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// BenchmarkObserveOp is what auditing adds to an op's own path: building the
// record of an exec and queueing it (the writer encodes and writes in the
// background; its cost is included, as b.N records are flushed in the timing).
func BenchmarkObserveOp(b *testing.B) {
	l, err := Open(Options{Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close(context.Background())
	rec := l.For(Connection{ID: "0123456789abcdef", Workspace: "ws", Agent: "ag", Platform: "https://api.example"})
	req := &agentpb.ControlRequest{RequestId: "req-1", Op: &agentpb.ControlRequest_Exec{Exec: &agentpb.ExecRequest{
		Command: []string{"git", "commit", "-m", "a message"}, Cwd: "/home/me/repo", Env: map[string]string{"A": "1", "B": "2"}}}}
	resp := &agentpb.ControlResponse{RequestId: "req-1", Result: &agentpb.ControlResponse_Exec{Exec: &agentpb.ExecResponse{}}}
	start := time.Now()
	b.Run("observe", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			rec.ObserveOp(req, resp, "exec", start, time.Millisecond, 120, 40)
		}
	})
	b.Run("observe+write", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			rec.ObserveOp(req, resp, "exec", start, time.Millisecond, 120, 40)
		}
		if err := l.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
	})
}
