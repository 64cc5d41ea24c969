package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func execWithPolicy(id string, p *agentpb.OperationResourcePolicy, argv ...string) *agentpb.ControlRequest {
	return &agentpb.ControlRequest{RequestId: id, ResourcePolicy: p,
		Op: &agentpb.ControlRequest_Exec{Exec: &agentpb.ExecRequest{Command: argv}}}
}

// The agent as it runs here, over NATS, with the host's real cgroup
// detection: Hello's resource bits say what the machine can enforce, and a
// policy it cannot enforce answers UNSUPPORTED with the host's reason
// (memory, CPU, and for an op no leaf can hold), while an empty policy runs.
func TestResourcePolicyOverNATSFollowsTheHost(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	hellos := subscribe(t, nc, testSubject("hello"))
	ra := startAgent(t, s.ClientURL(), nil)
	sup := ra.opts.ResourceLimits.Support()
	t.Logf("this host: memory %v cpu %v base %q reason %q", sup.Memory, sup.CPU, sup.Base, sup.Reason)

	caps := next(t, hellos, &agentpb.Hello{}).GetCapabilities()
	if caps.GetOperationResourcePolicy() != sup.Memory || caps.GetOperationCpuQuota() != sup.CPU {
		t.Fatalf("hello resource bits %v/%v, host support %+v", caps.GetOperationResourcePolicy(), caps.GetOperationCpuQuota(), sup)
	}

	unsupported := func(name string, req *agentpb.ControlRequest, want ...string) {
		t.Helper()
		e := request(t, nc, req).GetError()
		if e.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || e.GetDetail()["reason"] != cgroup.ReasonUnenforceable {
			t.Fatalf("%s: %v", name, e)
		}
		for _, w := range want {
			if !strings.Contains(e.GetMessage(), w) {
				t.Fatalf("%s: message %q lacks %q", name, e.GetMessage(), w)
			}
		}
	}
	mem := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20)}
	cpu := &agentpb.OperationResourcePolicy{CpuMaxMillicores: proto.Uint32(500)}
	if !sup.Memory {
		unsupported("exec memory", execWithPolicy("m", mem, "true"), "per-op memory limits", sup.Reason)
		unsupported("git memory", &agentpb.ControlRequest{RequestId: "g", ResourcePolicy: mem,
			Op: &agentpb.ControlRequest_Git{Git: &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_STATUS}}}, "git with a memory limit", sup.Reason)
	}
	if !sup.CPU {
		unsupported("exec cpu", execWithPolicy("c", cpu, "true"), "per-op CPU quotas", sup.Reason)
	}
	unsupported("fs_stat", &agentpb.ControlRequest{RequestId: "f", ResourcePolicy: mem,
		Op: &agentpb.ControlRequest_FsStat{FsStat: &agentpb.FsStatRequest{Path: "."}}}, "exec and git only")

	if resp := request(t, nc, execWithPolicy("e", &agentpb.OperationResourcePolicy{}, "echo", "ran")); string(resp.GetExec().GetStdout()) != "ran\n" {
		t.Fatalf("exec with an empty policy: %v", resp)
	}
	zero := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(0)}
	if e := request(t, nc, execWithPolicy("z", zero, "true")).GetError(); e.GetCode() != agentpb.ErrorCode_ERROR_CODE_OS || !strings.Contains(e.GetMessage(), "memory_max_bytes is 0") {
		t.Fatalf("a zero limit: %v", e)
	}
}

// A memory-hungry exec under memory_max is OOM-killed inside its own leaf:
// the agent lives on, the reply says why the command died, and the leaf is
// gone afterwards. It needs the memory controller in a delegated cgroup v2
// subtree and skips, with the host's reason, where there is none.
func TestMemoryHogIsOOMKilledInItsLeaf(t *testing.T) {
	sup := cgroup.Detect(nil, cgroup.Policy{}).Support()
	if !sup.Memory {
		t.Skip("no per-op memory limits on this host: " + sup.Reason)
	}
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	startAgent(t, s.ClientURL(), nil)

	// 256 MiB held in a shell variable, under a 32 MiB limit.
	hog := execWithPolicy("hog", &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(32 << 20)},
		"sh", "-c", `x=$(head -c 268435456 /dev/zero | tr '\000' x); echo survived ${#x}`)
	resp := request(t, nc, hog)
	r := resp.GetExec()
	if r == nil || r.GetExitCode() == 0 || strings.Contains(string(r.GetStdout()), "survived") ||
		!strings.Contains(string(r.GetStderr()), "out of memory") || !strings.Contains(string(r.GetStderr()), "memory.max 33554432") {
		t.Fatalf("hog: %v", resp)
	}
	if p := request(t, nc, ping("alive", 0)); p.GetPing().GetNonce() != 99 {
		t.Fatalf("agent after the OOM kill: %v", p)
	}
	// A modest command under the same limit runs to the end.
	if resp := request(t, nc, execWithPolicy("small", hog.ResourcePolicy, "echo", "fine")); string(resp.GetExec().GetStdout()) != "fine\n" {
		t.Fatalf("small exec: %v", resp)
	}
	leaves, _ := filepath.Glob(filepath.Join(sup.Base, "op-*"))
	var mine []string
	for _, l := range leaves {
		if strings.HasPrefix(filepath.Base(l), "op-"+strconv.Itoa(os.Getpid())+"-") {
			mine = append(mine, l)
		}
	}
	if len(mine) != 0 {
		t.Fatalf("leaves left behind: %v", mine)
	}
}

// Where the machine claims enforcement but the op's leaf cannot be made
// (the delegated cgroup went away), exec and git fail closed with a typed
// error naming the policy: the command never runs uncontained.
func TestLimitedOpFailsClosedWhenItsLeafCannotBeMade(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	gone := filepath.Join(t.TempDir(), "gone")
	limits := cgroup.NewAt(nil, cgroup.Policy{}, cgroup.Support{Memory: true, CPU: true, Base: gone})
	hellos := subscribe(t, nc, testSubject("hello"))
	ra := startAgent(t, s.ClientURL(), func(o *Options) { o.ResourceLimits = limits })
	if c := next(t, hellos, &agentpb.Hello{}).GetCapabilities(); !c.GetOperationResourcePolicy() || !c.GetOperationCpuQuota() {
		t.Fatalf("hello %v", c)
	}
	marker := filepath.Join(ra.root.Dir, "ran")

	p := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20), CpuMaxMillicores: proto.Uint32(500)}
	for _, req := range []*agentpb.ControlRequest{
		execWithPolicy("e", p, "touch", marker),
		{RequestId: "g", ResourcePolicy: p, Op: &agentpb.ControlRequest_Git{Git: &agentpb.GitRequest{Op: agentpb.GitOp_GIT_OP_RAW, Args: []string{"init", marker}}}},
	} {
		e := request(t, nc, req).GetError()
		if e.GetCode() != agentpb.ErrorCode_ERROR_CODE_OS || !strings.Contains(e.GetMessage(), "create the op's cgroup (resource policy memory.max=67108864 cpu=500m)") {
			t.Fatalf("%s: %v", req.GetRequestId(), e)
		}
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			t.Fatalf("%s ran uncontained: %v", req.GetRequestId(), err)
		}
	}
	// Ops without a policy are not touched.
	if resp := request(t, nc, execWithPolicy("plain", nil, "echo", "ok")); string(resp.GetExec().GetStdout()) != "ok\n" {
		t.Fatalf("plain exec: %v", resp)
	}
}
