// Package cgroup contains an op's processes in a Linux cgroup v2 leaf of
// their own, with the memory and CPU limits of the op's resource policy
// (ControlRequest.resource_policy, agent.md §9), clamped by the owner's local
// caps. It needs a delegated cgroup v2 subtree (the systemd unit's
// Delegate=yes); where there is none, [Manager.Support] says why and a policy
// asking for a limit is answered UNSUPPORTED, never silently ignored.
//
// The flow: the dispatcher binds the op's effective policy to its context
// ([Manager.Bind]); exec and git call [Place] where they build the command,
// which creates the leaf and makes the child start directly inside it
// (clone3 CLONE_INTO_CGROUP, so not one instruction of it runs uncontained);
// after the command is done [Leaf.Close] kills what is left in the leaf,
// reads its OOM kills and removes it.
package cgroup

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// The owner's local caps: the most any one op may be given, whatever the
// platform asks (bytes with an optional K/M/G/T binary suffix; millicores).
const (
	EnvMemoryMax        = "OPENGENI_AGENT_OP_MEMORY_MAX"
	EnvMemoryHigh       = "OPENGENI_AGENT_OP_MEMORY_HIGH"
	EnvCPUMaxMillicores = "OPENGENI_AGENT_OP_CPU_MAX_MILLICORES"
)

// ReasonUnenforceable is the UNSUPPORTED detail reason of a policy this
// machine cannot enforce.
const ReasonUnenforceable = "resource_policy_unenforceable"

// Contained reports the ops a resource policy applies to (control.md §9:
// exec and git carry it). Any other op carrying a policy is UNSUPPORTED: its
// work runs inside the agent or outlives the request, so no leaf can hold it.
func Contained(op string) bool { return op == "exec" || op == "git" }

// Policy is a per-op resource policy. Zero fields mean "no limit".
type Policy struct {
	MemoryMax     uint64 // bytes: memory.max (the OOM killer acts beyond it)
	MemoryHigh    uint64 // bytes: memory.high (reclaim and throttling beyond it)
	CPUMillicores uint32 // cpu.max: 1000 = one CPU
}

// IsZero reports a policy that limits nothing.
func (p Policy) IsZero() bool { return p == Policy{} }

// limitsMemory reports whether p asks for a memory limit.
func (p Policy) limitsMemory() bool { return p.MemoryMax != 0 || p.MemoryHigh != 0 }

// Clamp lowers each of p's limits to the cap's, and sets the cap where p
// has none: a cap is the most any op may use.
func (p Policy) Clamp(caps Policy) Policy {
	low := func(v, c uint64) uint64 {
		if c != 0 && (v == 0 || v > c) {
			return c
		}
		return v
	}
	return Policy{
		MemoryMax:     low(p.MemoryMax, caps.MemoryMax),
		MemoryHigh:    low(p.MemoryHigh, caps.MemoryHigh),
		CPUMillicores: uint32(low(uint64(p.CPUMillicores), uint64(caps.CPUMillicores))),
	}
}

// String is the policy as cgroup settings ("memory.max=64MiB cpu=500m").
func (p Policy) String() string {
	var parts []string
	if p.MemoryMax != 0 {
		parts = append(parts, "memory.max="+strconv.FormatUint(p.MemoryMax, 10))
	}
	if p.MemoryHigh != 0 {
		parts = append(parts, "memory.high="+strconv.FormatUint(p.MemoryHigh, 10))
	}
	if p.CPUMillicores != 0 {
		parts = append(parts, fmt.Sprintf("cpu=%dm", p.CPUMillicores))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// FromProto reads a wire policy. A field present with the value 0 is a
// malformed request (a zero limit can only kill the op), not "no limit".
func FromProto(p *agentpb.OperationResourcePolicy) (Policy, error) {
	if p == nil {
		return Policy{}, nil
	}
	for name, set := range map[string]bool{
		"memory_max_bytes":   p.MemoryMaxBytes != nil && *p.MemoryMaxBytes == 0,
		"memory_high_bytes":  p.MemoryHighBytes != nil && *p.MemoryHighBytes == 0,
		"cpu_max_millicores": p.CpuMaxMillicores != nil && *p.CpuMaxMillicores == 0,
	} {
		if set {
			return Policy{}, agenterr.Invalid("resource policy %s is 0; leave it unset for no limit", name)
		}
	}
	return Policy{MemoryMax: p.GetMemoryMaxBytes(), MemoryHigh: p.GetMemoryHighBytes(), CPUMillicores: p.GetCpuMaxMillicores()}, nil
}

// CapsFromEnv reads the owner's local caps. An unparsable value is an error
// (a cap the owner set must not be dropped because of a typo).
func CapsFromEnv(getenv func(string) string) (Policy, error) {
	var caps Policy
	var err error
	if caps.MemoryMax, err = envBytes(getenv, EnvMemoryMax); err != nil {
		return Policy{}, err
	}
	if caps.MemoryHigh, err = envBytes(getenv, EnvMemoryHigh); err != nil {
		return Policy{}, err
	}
	if v := strings.TrimSpace(getenv(EnvCPUMaxMillicores)); v != "" {
		n, perr := strconv.ParseUint(v, 10, 32)
		if perr != nil || n == 0 {
			return Policy{}, fmt.Errorf("%s=%q: want a positive number of millicores (1000 = one CPU)", EnvCPUMaxMillicores, v)
		}
		caps.CPUMillicores = uint32(n)
	}
	return caps, nil
}

// envBytes parses a byte count such as 536870912, 512M or 2G (binary units).
func envBytes(getenv func(string) string, key string) (uint64, error) {
	v := strings.TrimSpace(getenv(key))
	if v == "" {
		return 0, nil
	}
	num, shift := strings.ToUpper(v), 0
	if n, ok := strings.CutSuffix(num, "IB"); ok { // 2GiB
		num = n
	} else {
		num = strings.TrimSuffix(num, "B") // 2GB, 2G
	}
	for i, unit := range []string{"K", "M", "G", "T"} {
		if n, ok := strings.CutSuffix(num, unit); ok {
			num, shift = n, 10*(i+1)
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
	if err != nil || n == 0 || n > (1<<63)>>shift {
		return 0, fmt.Errorf("%s=%q: want a positive byte count such as 536870912, 512M or 2G", key, v)
	}
	return n << shift, nil
}

// Support is what this machine can enforce per op.
type Support struct {
	Memory bool // memory.max / memory.high
	CPU    bool // cpu.max
	// Reason says why a controller is missing ("" when both are there).
	Reason string
	// Base is the delegated cgroup directory the leaves are made in.
	Base string
}

// Manager makes per-op leaves under the agent's delegated cgroup. A nil
// *Manager enforces nothing. It is safe for concurrent use.
type Manager struct {
	support Support
	caps    Policy
	log     *slog.Logger
	pid     int
	seq     atomic.Uint64
	// rmdir removes a leaf (unix.Rmdir; a test's fake cgroupfs removes the
	// interface files too, as the kernel does).
	rmdir func(string) error
}

// Unavailable is a Manager that enforces nothing, for reason (an agent
// whose owner turned limits off, or a test that must not depend on the host).
func Unavailable(reason string) *Manager {
	return NewAt(nil, Policy{}, Support{Reason: reason})
}

// NewAt is a Manager over a delegated cgroup found elsewhere (s.Base, with
// the controllers s says it has), and the owner's caps: for a supervisor
// that set the subtree up itself, and for tests.
func NewAt(log *slog.Logger, caps Policy, s Support) *Manager {
	if log == nil {
		log = slog.Default()
	}
	return &Manager{support: s, caps: caps, log: log.With("component", "cgroup"), pid: os.Getpid(), rmdir: removeDir}
}

// Support reports what the machine can enforce.
func (m *Manager) Support() Support {
	if m == nil {
		return Support{Reason: "per-op resource limits are not set up in this agent"}
	}
	return m.support
}

// Caps are the owner's local caps.
func (m *Manager) Caps() Policy {
	if m == nil {
		return Policy{}
	}
	return m.caps
}

// Bind decides op's resource policy: it fails UNSUPPORTED when the request
// asks for a limit this machine cannot enforce (or op is not one a leaf can
// contain), and otherwise returns ctx carrying the effective policy (the
// request's clamped by the local caps, which apply to every contained op
// even without a request policy) for [Place].
func (m *Manager) Bind(ctx context.Context, op string, wire *agentpb.OperationResourcePolicy) (context.Context, error) {
	if wire == nil && !Contained(op) { // ping, fs ops, ...: nothing to decide
		return ctx, nil
	}
	req, err := FromProto(wire)
	if err != nil {
		return ctx, err
	}
	s := m.Support()
	if !req.IsZero() {
		if !Contained(op) {
			return ctx, Unenforceable("%s with a resource policy: limits apply to exec and git only", op)
		}
		if req.limitsMemory() && !s.Memory {
			return ctx, Unenforceable("%s with a memory limit (%s): this machine cannot enforce per-op memory limits: %s", op, req, s.Reason)
		}
		if req.CPUMillicores != 0 && !s.CPU {
			return ctx, Unenforceable("%s with a CPU limit (%s): this machine cannot enforce per-op CPU quotas: %s", op, req, s.Reason)
		}
	}
	if !Contained(op) || (!s.Memory && !s.CPU) {
		return ctx, nil
	}
	caps := m.caps
	if !s.Memory {
		caps.MemoryMax, caps.MemoryHigh = 0, 0
	}
	if !s.CPU {
		caps.CPUMillicores = 0
	}
	eff := req.Clamp(caps)
	if eff.IsZero() {
		return ctx, nil
	}
	return context.WithValue(ctx, bindingKey{}, binding{m: m, policy: eff, requested: !req.IsZero()}), nil
}

// Unenforceable is the UNSUPPORTED answer to a policy that cannot be
// enforced (detail reason ReasonUnenforceable).
func Unenforceable(format string, args ...any) *agenterr.Error {
	e := agenterr.Unsupported(format, args...)
	e.Detail = map[string]string{"reason": ReasonUnenforceable}
	return e
}

type bindingKey struct{}

type binding struct {
	m         *Manager
	policy    Policy
	requested bool // the request carried a policy (not only the owner's caps)
}

// Requested reports whether the op's request carried a policy to enforce:
// work that would run inside the agent (go-git) must then refuse. The
// owner's caps alone do not count: they limit the processes the agent
// starts, and such work starts none.
func Requested(ctx context.Context) bool {
	b, _ := ctx.Value(bindingKey{}).(binding)
	return b.requested
}

// PolicyOf is the effective policy bound to ctx (zero when none).
func PolicyOf(ctx context.Context) Policy {
	b, _ := ctx.Value(bindingKey{}).(binding)
	return b.policy
}

// Place creates the leaf of ctx's policy and sets cmd to start inside it.
// Without a policy it returns a nil *Leaf (whose methods do nothing). A leaf
// that cannot be made becomes cmd.Err, so Start fails with it (an OS error
// naming the policy) and the command never runs uncontained. Call it after
// the rest of cmd.SysProcAttr is set, before starting cmd, and Close the
// leaf once cmd is done.
func Place(ctx context.Context, cmd *exec.Cmd) *Leaf {
	b, ok := ctx.Value(bindingKey{}).(binding)
	if !ok {
		return nil
	}
	l, err := b.m.newLeaf(b.policy)
	if err != nil {
		// OS, never NOT_FOUND: the caller's paths are not at fault.
		cmd.Err = &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_OS, Err: err,
			Message: "create the op's cgroup (resource policy " + b.policy.String() + "): " + err.Error()}
		return nil
	}
	l.attach(cmd)
	return l
}

// Leaf is one op's cgroup.
type Leaf struct {
	m      *Manager
	dir    string
	policy Policy
	fd     int
	closed bool
	out    Outcome
}

// Dir is the leaf's cgroup directory.
func (l *Leaf) Dir() string {
	if l == nil {
		return ""
	}
	return l.dir
}

// Outcome is what the kernel did to an op inside its leaf.
type Outcome struct {
	// OOMKills is memory.events oom_kill: processes the OOM killer ended
	// because the leaf hit memory.max.
	OOMKills  uint64
	MemoryMax uint64
}

// OOMKilled reports whether the op hit its memory limit and lost processes.
func (o Outcome) OOMKilled() bool { return o.OOMKills > 0 }

// Note is the line told to the op's caller on stderr when it was OOM-killed
// ("" otherwise): the exit alone (killed by SIGKILL) does not say why.
func (o Outcome) Note() string {
	if !o.OOMKilled() {
		return ""
	}
	return fmt.Sprintf("\nopengeni-agent: out of memory: the op's memory limit (memory.max %d bytes) was reached and the kernel killed %d process(es) in its cgroup\n",
		o.MemoryMax, o.OOMKills)
}

// noteRoom bounds Outcome.Note's length.
const noteRoom = 200

// NoteRoom is the room to keep in a reply for the OOM note of ctx's op: 0
// when no policy is bound.
func NoteRoom(ctx context.Context) int {
	if _, bound := ctx.Value(bindingKey{}).(binding); !bound {
		return 0
	}
	return noteRoom
}

// Close ends the op's containment: it kills whatever is left in the leaf
// (a background child the command left running ends with the op), waits
// until the leaf is empty, reads its OOM kills and removes it. It is
// idempotent and nil-safe; the first call's outcome is returned again.
func (l *Leaf) Close() Outcome {
	if l == nil {
		return Outcome{}
	}
	if !l.closed {
		l.closed = true
		l.out = l.teardown()
	}
	return l.out
}
