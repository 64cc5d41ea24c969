package store

import (
	"testing"

	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func progress(id, op string, stage agentpb.AgentUpdateStage, mod func(*agentpb.AgentUpdateProgress)) *agentpb.AgentEvent {
	p := &agentpb.AgentUpdateProgress{OperationId: op, TargetVersion: "2.0.0", Stage: stage}
	if mod != nil {
		mod(p)
	}
	return &agentpb.AgentEvent{AgentId: id, Event: &agentpb.AgentEvent_AgentUpdateProgress{AgentUpdateProgress: p}}
}

// Ingestion keeps the latest stage of each fleet update operation (never
// moving backwards when v1 and instance subjects both carry an event), and
// a Hello's completed_update_* and binary_sha256 are kept and mark the
// operation completed.
func TestIngestUpdateProgressAndCompletedHello(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	en := e.enroll(t, "pk-update")
	in := e.ingest(t)
	v1 := "agent." + testWS + "." + en.ID
	inst := v1 + ".connection.5b0f7c1e-1111-4222-8333-944455556666"
	n := uint64(0)
	step := func(subject string, m proto.Message) {
		t.Helper()
		publish(t, e.nc, subject, m)
		n++
		waitHandled(t, in, n)
	}
	machine := func() Machine {
		t.Helper()
		m, err := e.store.GetMachine(ctx, testWS, en.ID)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	const sha = "aa11"
	for _, st := range []agentpb.AgentUpdateStage{
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING,
	} {
		step(v1+".events", progress(en.ID, "op-1", st, nil))
	}
	step(inst+".events", progress(en.ID, "op-1", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_APPLYING,
		func(p *agentpb.AgentUpdateProgress) { p.ExpectedBinarySha256 = sha }))
	// the same stage's copy on the other subject and a late earlier stage change nothing
	step(v1+".events", progress(en.ID, "op-1", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING, nil))
	step(inst+".events", progress(en.ID, "op-1", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING, nil))
	// a second operation on the same machine failed and rolled back
	step(v1+".events", progress(en.ID, "op-2", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED, func(p *agentpb.AgentUpdateProgress) {
		p.ErrorCode, p.RolledBack = "HEALTH_CHECK", true
	}))
	m := machine()
	u1, ok1 := m.Update("op-1")
	u2, ok2 := m.Update("op-2")
	if !ok1 || u1.Stage != "restarting" || u1.ExpectedBinarySHA256 != sha || u1.TargetVersion != "2.0.0" || u1.Completed {
		t.Fatalf("op-1: %+v", u1)
	}
	if !ok2 || u2.Stage != "failed" || u2.ErrorCode != "HEALTH_CHECK" || !u2.RolledBack || u2.Retryable {
		t.Fatalf("op-2: %+v", u2)
	}

	h := hello(testWS, en.ID, false, nil)
	h.AgentVersion, h.BinarySha256 = "2.0.0", sha
	h.CompletedUpdateOperationId, h.CompletedUpdateTargetVersion, h.CompletedUpdateBinarySha256 = "op-1", "2.0.0", sha
	step(inst+".hello", h)
	m = machine()
	if m.BinarySHA256 != sha || m.CompletedUpdate == nil || *m.CompletedUpdate != (CompletedUpdate{OperationID: "op-1", TargetVersion: "2.0.0", BinarySHA256: sha}) {
		t.Fatalf("hello: sha %q completed %+v", m.BinarySHA256, m.CompletedUpdate)
	}
	if u, _ := m.Update("op-1"); !u.Completed || u.Stage != "restarting" {
		t.Fatalf("op-1 after hello: %+v", u)
	}

	// A Hello without completion fields clears the record (the binary changed).
	h2 := hello(testWS, en.ID, false, nil)
	h2.BinarySha256 = "bb22"
	step(v1+".hello", h2)
	if m = machine(); m.CompletedUpdate != nil || m.BinarySHA256 != "bb22" {
		t.Fatalf("hello without completion: %+v %q", m.CompletedUpdate, m.BinarySHA256)
	}
	if err := e.store.ApplyUpdateProgress(ctx, testWS, en.ID, &agentpb.AgentUpdateProgress{}); err == nil {
		t.Fatal("progress without an operation id accepted")
	}
}

func TestUpdatesAreBounded(t *testing.T) {
	var m Machine
	for i := range MaxUpdatesKept + 5 {
		m.putUpdate(string(rune('a'+i)), func(u *UpdateProgress) { u.Stage = "accepted" })
	}
	if len(m.Updates) != MaxUpdatesKept || m.Updates[len(m.Updates)-1].OperationID != string(rune('a'+MaxUpdatesKept+4)) {
		t.Fatalf("kept %d, newest %q", len(m.Updates), m.Updates[len(m.Updates)-1].OperationID)
	}
}
