package agent

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/opengeni/opengeni-agent/internal/cgroup"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Every op of the schema that this build does not serve (the next
// revision's op-stream, write chunks, browser and computer surfaces, fleet
// update, ...) answers UNSUPPORTED naming the op; none is silently dropped
// or mistaken for another.
func TestUnservedOpsAnswerUnsupportedByName(t *testing.T) {
	a, err := New(Options{Servers: []string{"nats://127.0.0.1:1"}, WorkspaceID: testWS, AgentID: testAgent, WorkspaceRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	d := a.Dispatcher()
	od := (&agentpb.ControlRequest{}).ProtoReflect().Descriptor().Oneofs().ByName("op")
	unserved := 0
	for i := 0; i < od.Fields().Len(); i++ {
		fd := od.Fields().Get(i)
		name := string(fd.Name())
		if d.Serves(name) || agentInitiated[fd.Name()] {
			continue
		}
		unserved++
		req := &agentpb.ControlRequest{RequestId: "r-" + name}
		m := req.ProtoReflect()
		m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		resp := roundTrip(t, d, req, 1<<20)
		if e := resp.GetError(); e.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || !strings.Contains(e.GetMessage(), name) || resp.GetRequestId() != req.GetRequestId() {
			t.Errorf("%s: %v", name, resp)
		}
	}
	if unserved < 4 {
		t.Fatalf("only %d unserved ops: the next revision's ops should be among them", unserved)
	}
}

// A resource policy this agent cannot enforce is refused, never ignored.
func TestResourcePolicyIsUnsupported(t *testing.T) {
	a, err := New(Options{Servers: []string{"nats://127.0.0.1:1"}, WorkspaceID: testWS, AgentID: testAgent, WorkspaceRoot: t.TempDir(),
		ResourceLimits: cgroup.Unavailable("no delegated cgroup v2 subtree (test)")})
	if err != nil {
		t.Fatal(err)
	}
	req := &agentpb.ControlRequest{RequestId: "r1", Op: &agentpb.ControlRequest_Exec{Exec: &agentpb.ExecRequest{Command: []string{"true"}}},
		ResourcePolicy: &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20)}}
	resp := roundTrip(t, a.Dispatcher(), req, 1<<20)
	if e := resp.GetError(); e.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || e.GetDetail()["reason"] != "resource_policy_unenforceable" ||
		!strings.Contains(e.GetMessage(), "no delegated cgroup v2 subtree (test)") {
		t.Fatalf("exec with a policy: %v", resp)
	}
	// An empty policy asks for nothing: the op runs.
	req.ResourcePolicy = &agentpb.OperationResourcePolicy{}
	if resp := roundTrip(t, a.Dispatcher(), req, 1<<20); resp.GetExec() == nil {
		t.Fatalf("exec with an empty policy: %v", resp)
	}
}
