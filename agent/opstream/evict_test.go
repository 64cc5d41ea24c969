package opstream

import (
	"context"
	"testing"

	"github.com/opengeni/opengeni-agent/agent/exec"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The completed-op store is bounded: the oldest completed op is evicted and
// then reported lost (EVICTED), its unacked frames counted; an id never
// seen is lost because the agent restarted.
func TestCompletedStoreEvicts(t *testing.T) {
	exits := make(chan string, 8)
	s := New(Options{
		Exec:         exec.New(exec.Options{Root: workspace.New(t.TempDir())}),
		MaxCompleted: 1,
		Subject:      func(id string) string { return id },
		Publish: func(subj string, b []byte) error {
			if len(b) > 0 {
				exits <- subj
			}
			return nil
		},
	})
	defer s.Close()
	run := func(id string) {
		ctx := opctx.WithRequestID(context.Background(), id)
		if _, err := s.Start(ctx, &agentpb.OpStart{Op: &agentpb.OpStart_Exec{Exec: &agentpb.ExecRequest{Command: []string{"echo", id}}}}); err != nil {
			t.Fatal(err)
		}
		for {
			st, _ := s.Query(ctx, &agentpb.OpQuery{OpId: id})
			if st.GetState() == agentpb.OpState_OP_STATE_COMPLETE {
				return
			}
			<-exits // a frame went out; look again
		}
	}
	run("op-a")
	run("op-b")
	ctx := context.Background()
	if st, _ := s.Query(ctx, &agentpb.OpQuery{OpId: "op-a"}); st.GetState() != agentpb.OpState_OP_STATE_LOST || st.GetLostReason() != agentpb.OpLostReason_OP_LOST_REASON_EVICTED {
		t.Fatalf("op-a: %v", st)
	}
	if st, _ := s.Query(ctx, &agentpb.OpQuery{OpId: "op-b"}); st.GetState() != agentpb.OpState_OP_STATE_COMPLETE || st.GetExit().GetTotals()["stdout"] != 5 {
		t.Fatalf("op-b: %v", st)
	}
	if st, _ := s.Query(ctx, &agentpb.OpQuery{OpId: "never"}); st.GetLostReason() != agentpb.OpLostReason_OP_LOST_REASON_AGENT_RESTARTED {
		t.Fatalf("unknown op: %v", st)
	}
	if got := s.Telemetry().EvictedUnacked; got != 1 {
		t.Fatalf("evicted unacked = %d, want 1 (op-a's frames were never acked)", got)
	}
}
