package control

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// scriptedMachine answers agent_update_apply on a real nats-server the way
// its script says, publishing on the connection-instance subjects only (as
// an upstream next-revision agent does). The real agent is exercised in
// cmd/opengeni-agent's TestFleetUpdateFromControlPlane; this drives the
// RollOut outcomes a healthy agent does not produce on demand.
type scriptedMachine struct {
	id     string
	script func(m *scriptedMachine, req *agentpb.AgentUpdateApplyRequest) (*agentpb.ControlResponse, func())
	nc     *nats.Conn
}

const scriptWS = "ws-script"
const scriptInst = "33333333-3333-4333-8333-333333333333"

func (m *scriptedMachine) publish(t *testing.T, suffix string, msg proto.Message) {
	b, _ := proto.Marshal(msg)
	if err := m.nc.Publish(subject.Connection(scriptWS, m.id, scriptInst)+"."+suffix, b); err != nil {
		t.Error(err)
	}
}

func (m *scriptedMachine) progress(t *testing.T, op string, stage agentpb.AgentUpdateStage, mod func(*agentpb.AgentUpdateProgress)) {
	p := &agentpb.AgentUpdateProgress{OperationId: op, TargetVersion: "2.0.0", Stage: stage}
	if mod != nil {
		mod(p)
	}
	m.publish(t, subject.Events, &agentpb.AgentEvent{AgentId: m.id, Event: &agentpb.AgentEvent_AgentUpdateProgress{AgentUpdateProgress: p}})
}

func serveScript(t *testing.T, nc *nats.Conn, m *scriptedMachine) {
	t.Helper()
	m.nc = nc
	if _, err := nc.Subscribe(SubjectFor(scriptWS, m.id), func(msg *nats.Msg) {
		req := new(agentpb.ControlRequest)
		_ = proto.Unmarshal(msg.Data, req)
		resp, after := m.script(m, req.GetAgentUpdateApply())
		resp.RequestId = req.GetRequestId()
		out, _ := proto.Marshal(resp)
		_ = msg.Respond(out)
		if after != nil {
			go after()
		}
	}); err != nil {
		t.Fatal(err)
	}
}

func accepted(req *agentpb.AgentUpdateApplyRequest) *agentpb.ControlResponse {
	return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_AgentUpdateApply{AgentUpdateApply: &agentpb.AgentUpdateApplyResponse{
		Accepted: true, OperationId: req.GetOperationId(), CurrentVersion: "1.0.0", CurrentSha256: "aa", TargetVersion: req.GetTargetVersion()}}}
}

// RollOut's outcomes: a machine that comes back without completing the
// operation failed; one that confirms with another binary than released
// failed; an update in progress elsewhere is a retryable failure, not a
// fence; a machine that never finishes times out (retryable); a completing
// one is updated, with events deduplicated. With Parallelism 1 the next
// machine is asked only after the previous one's outcome.
func TestRollOutOutcomes(t *testing.T) {
	srv := natstest.Start(t)
	agentNC := natstest.Connect(t, srv)
	ctlNC := natstest.Connect(t, srv)
	rpc := NewNATSRPC(StaticConn(ctlNC))

	var mu sync.Mutex
	inFlight, maxInFlight, entries := 0, 0, 0
	changed := make(chan struct{})
	enter := func() int {
		mu.Lock()
		defer mu.Unlock()
		inFlight++
		maxInFlight = max(maxInFlight, inFlight)
		entries++
		close(changed)
		changed = make(chan struct{})
		return entries
	}
	// linger keeps a machine's update open until another machine is asked
	// (or a moment passes), so rollouts that overlap are seen to overlap.
	linger := func(n int) {
		timeout := time.After(300 * time.Millisecond)
		for {
			mu.Lock()
			more, ch := entries > n, changed
			mu.Unlock()
			if more {
				return
			}
			select {
			case <-ch:
			case <-timeout:
				return
			}
		}
	}
	leave := func() { mu.Lock(); inFlight--; mu.Unlock() }
	hello := func(m *scriptedMachine, op, sha string) {
		m.publish(t, subject.Hello, &agentpb.Hello{AgentId: m.id, AgentVersion: "2.0.0", BinarySha256: sha,
			CompletedUpdateOperationId: op, CompletedUpdateTargetVersion: "2.0.0", CompletedUpdateBinarySha256: sha})
	}
	restart := func(m *scriptedMachine, req *agentpb.AgentUpdateApplyRequest, finish func()) (*agentpb.ControlResponse, func()) {
		n := enter()
		return accepted(req), func() {
			linger(n)
			op := req.GetOperationId()
			m.progress(t, op, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, nil)
			m.progress(t, op, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, nil) // a duplicate (v1 + instance)
			m.progress(t, op, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING, func(p *agentpb.AgentUpdateProgress) { p.ExpectedBinarySha256 = "bb" })
			leave()
			finish()
		}
	}
	machines := []*scriptedMachine{
		{id: "ok", script: func(m *scriptedMachine, req *agentpb.AgentUpdateApplyRequest) (*agentpb.ControlResponse, func()) {
			return restart(m, req, func() { hello(m, req.GetOperationId(), "bb") })
		}},
		{id: "lost", script: func(m *scriptedMachine, req *agentpb.AgentUpdateApplyRequest) (*agentpb.ControlResponse, func()) {
			return restart(m, req, func() { hello(m, "", "aa") })
		}},
		{id: "wrongsha", script: func(m *scriptedMachine, req *agentpb.AgentUpdateApplyRequest) (*agentpb.ControlResponse, func()) {
			return restart(m, req, func() { hello(m, req.GetOperationId(), "cc") })
		}},
		{id: "busy", script: func(*scriptedMachine, *agentpb.AgentUpdateApplyRequest) (*agentpb.ControlResponse, func()) {
			return &agentpb.ControlResponse{Error: &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_FENCED, Retryable: true,
				Message: "update u is already in progress", Detail: map[string]string{"reason": "update_in_progress"}}}, nil
		}},
		{id: "silent", script: func(_ *scriptedMachine, req *agentpb.AgentUpdateApplyRequest) (*agentpb.ControlResponse, func()) {
			return accepted(req), nil // accepted, then nothing
		}},
	}
	for _, m := range machines {
		serveScript(t, agentNC, m)
	}
	if err := agentNC.Flush(); err != nil {
		t.Fatal(err)
	}
	var rm []RolloutMachine
	for _, m := range machines {
		s, err := NewSession(SessionConfig{WorkspaceID: scriptWS, AgentID: m.id, RPC: rpc, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rm = append(rm, RolloutMachine{Session: s})
	}
	var progMu sync.Mutex
	progress := map[string]int{}
	res, err := RollOut(ctxT(t), rm, RolloutOptions{Conn: ctlNC, TargetVersion: "2.0.0", OperationID: "r", Parallelism: 1,
		Timeout: 3 * time.Second, Progress: func(machine string, _ *agentpb.AgentUpdateProgress) {
			progMu.Lock()
			progress[machine]++
			progMu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		outcome   UpdateOutcome
		retryable bool
		errHas    string
	}{
		"ok":       {UpdateUpdated, false, ""},
		"lost":     {UpdateFailed, false, "came back on 2.0.0 without completing operation r:lost"},
		"wrongsha": {UpdateFailed, false, "runs binary cc, not the released bb"},
		"busy":     {UpdateFailed, true, "already in progress"},
		"silent":   {UpdateFailed, true, "no outcome"},
	}
	for i, r := range res {
		w := want[machines[i].id]
		if r.Machine != machines[i].id || r.OperationID != "r:"+machines[i].id || r.Outcome != w.outcome || r.Retryable != w.retryable ||
			(w.errHas == "") != (r.Err == nil) || !strings.Contains(fmt.Sprint(r.Err), w.errHas) {
			t.Errorf("%s: %+v", machines[i].id, r)
		}
	}
	if r := res[0]; r.Version != "2.0.0" || r.BinarySHA256 != "bb" || len(r.Stages) != 2 {
		t.Errorf("ok: %+v", r)
	}
	if progress["ok"] != 2 || progress["busy"] != 0 {
		t.Errorf("progress callbacks %v", progress)
	}
	mu.Lock()
	defer mu.Unlock()
	if maxInFlight != 1 {
		t.Errorf("%d machines in flight at once, parallelism 1", maxInFlight)
	}
	if _, err := RollOut(ctxT(t), rm, RolloutOptions{}); err == nil {
		t.Error("RollOut without a connection")
	}
}
