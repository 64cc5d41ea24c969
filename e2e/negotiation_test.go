//go:build unix

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// A real agent over NATS, its Hello and heartbeats ingested into the
// store: negotiation and operation admission read the machine's own report
// (its desktop reason, its resource-policy bits, its capacity telemetry),
// and what admission predicts for a resource policy is what the agent then
// answers.
func TestNegotiationReadsARealAgentsReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := natstest.Start(t, natstest.JetStream(t.TempDir()))
	nc := natstest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(ctx, js, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ws := uuid.NewString()
	en, err := st.UpsertEnrollment(ctx, store.FinalizeInput{WorkspaceID: ws, Pubkey: "pk", OS: "linux", HasDisplay: true, AllowScreenControl: true})
	if err != nil {
		t.Fatal(err)
	}
	in, err := st.Ingest(nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)

	// No display here (DISPLAY points nowhere), so the agent says why.
	a, err := agent.New(agent.Options{Servers: []string{srv.ClientURL()}, WorkspaceID: ws, AgentID: en.ID,
		WorkspaceRoot: t.TempDir(), HeartbeatInterval: 50 * time.Millisecond, Display: ":4711"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	var m store.Machine
	natstest.Eventually(t, 20*time.Second, func() error {
		m, err = st.GetMachine(ctx, ws, en.ID)
		if err != nil || m.Capabilities == nil || m.Heartbeat == nil || m.Heartbeat.Capacity == nil || m.LatestMetrics == nil {
			return fmt.Errorf("machine not reported yet: %v", err)
		}
		return nil
	})
	report := m.Report()
	sup := cgroup.Detect(nil, cgroup.Policy{}).Support() // what the agent found on this host
	if report.ResourcePolicy != sup.Memory || report.CPUQuota != sup.CPU || !report.NoDesktop || report.DesktopUnavailableReason == "" ||
		report.Capacity.MemAvailableBytes == 0 || report.Capacity.DiskFreeBytes == 0 || report.Capacity.Nproc == 0 || report.MemTotalBytes == 0 {
		t.Fatalf("report %+v capacity %+v (host support %+v)", report, report.Capacity, sup)
	}

	rpc := control.NewNATSRPC(control.DialNATS(srv.ClientURL()))
	t.Cleanup(rpc.Close)
	mem := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(256 << 20)}
	sess, err := control.NewSession(control.SessionConfig{WorkspaceID: ws, AgentID: en.ID, RPC: rpc, Instances: st, ResourcePolicy: mem})
	if err != nil {
		t.Fatal(err)
	}
	enr, err := st.ControlEnrollment(ctx, ws, en.ID)
	if err != nil {
		t.Fatal(err)
	}
	doc := control.NegotiateCapabilities(ctx, control.NegotiationContext{Enrollment: enr, Session: sess, Report: &report})
	if doc.Liveness != "warm" || doc.DesktopStream.Reason != control.ReasonDisplayUnavailable || doc.Machine == nil ||
		!hasNote(doc.Machine.Notes, "desktop unavailable: "+report.DesktopUnavailableReason) {
		t.Fatalf("document: liveness %s desktop %+v machine %+v", doc.Liveness, doc.DesktopStream, doc.Machine)
	}
	if !sup.Memory && !hasNote(doc.Machine.Notes, "resource policy unsupported") {
		t.Fatalf("notes %q lack the unsupported resource policy", doc.Machine.Notes)
	}

	shot, err := st.AdmitOperation(ctx, ws, en.ID, true, control.OperationRequest{Op: "screenshot"})
	if err != nil || shot.Allowed || shot.Message != "desktop unavailable: "+report.DesktopUnavailableReason {
		t.Fatalf("screenshot admission %+v %v", shot, err)
	}
	verdict, err := st.AdmitOperation(ctx, ws, en.ID, true, control.OperationRequest{Op: "exec", ResourcePolicy: mem})
	if err != nil {
		t.Fatal(err)
	}
	// The agent agrees with the verdict.
	res, execErr := sess.Exec(ctx, control.ExecOptions{Cmd: "echo contained"})
	var ce *control.Error
	switch {
	case !verdict.Allowed:
		if verdict.Reason != control.ReasonResourcePolicyUnsupported || !errors.As(execErr, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED ||
			!strings.Contains(ce.Message, sup.Reason) {
			t.Fatalf("verdict %+v, agent answered %v %v", verdict, res, execErr)
		}
	default:
		if execErr != nil || res.Stdout != "contained\n" {
			t.Fatalf("verdict %+v, agent answered %v %v", verdict, res, execErr)
		}
	}
	// Without a policy the same exec runs anywhere.
	plain, err := control.NewSession(control.SessionConfig{WorkspaceID: ws, AgentID: en.ID, RPC: rpc, Instances: st})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := plain.Exec(ctx, control.ExecOptions{Cmd: "echo plain"}); err != nil || res.Stdout != "plain\n" {
		t.Fatalf("plain exec %v %v", res, err)
	}
}

func hasNote(notes []string, prefix string) bool {
	for _, n := range notes {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}
