package cgroup

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestCapsFromEnv(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    Policy
		wantErr string
	}{
		{env: nil, want: Policy{}},
		{env: map[string]string{EnvMemoryMax: "536870912"}, want: Policy{MemoryMax: 512 << 20}},
		{env: map[string]string{EnvMemoryMax: "512M", EnvMemoryHigh: "1g", EnvCPUMaxMillicores: "1500"}, want: Policy{MemoryMax: 512 << 20, MemoryHigh: 1 << 30, CPUMillicores: 1500}},
		{env: map[string]string{EnvMemoryMax: "2GiB", EnvMemoryHigh: " 64KB "}, want: Policy{MemoryMax: 2 << 30, MemoryHigh: 64 << 10}},
		{env: map[string]string{EnvMemoryMax: "lots"}, wantErr: EnvMemoryMax},
		{env: map[string]string{EnvMemoryHigh: "0"}, wantErr: EnvMemoryHigh},
		{env: map[string]string{EnvMemoryMax: "99999999999T"}, wantErr: EnvMemoryMax},
		{env: map[string]string{EnvCPUMaxMillicores: "-1"}, wantErr: EnvCPUMaxMillicores},
		{env: map[string]string{EnvCPUMaxMillicores: "0"}, wantErr: EnvCPUMaxMillicores},
	}
	for _, tc := range tests {
		got, err := CapsFromEnv(func(k string) string { return tc.env[k] })
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want one naming %s", tc.env, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v: %+v %v, want %+v", tc.env, got, err, tc.want)
		}
	}
}

func TestClamp(t *testing.T) {
	caps := Policy{MemoryMax: 100, CPUMillicores: 500}
	for _, tc := range []struct{ req, want Policy }{
		{Policy{}, Policy{MemoryMax: 100, CPUMillicores: 500}},                                             // caps fill what the request leaves open
		{Policy{MemoryMax: 50, MemoryHigh: 40}, Policy{MemoryMax: 50, MemoryHigh: 40, CPUMillicores: 500}}, // below the cap: kept
		{Policy{MemoryMax: 500, CPUMillicores: 2000}, Policy{MemoryMax: 100, CPUMillicores: 500}},          // above: lowered
	} {
		if got := tc.req.Clamp(caps); got != tc.want {
			t.Errorf("%+v clamped: %+v, want %+v", tc.req, got, tc.want)
		}
	}
}

// Bind is the admission rule of control.md §9: a policy the machine
// cannot enforce is UNSUPPORTED (never ignored), an enforceable one and the
// owner's caps travel with the op.
func TestBind(t *testing.T) {
	both := &Manager{support: Support{Memory: true, CPU: true, Base: "/x"}, caps: Policy{MemoryMax: 1 << 30}}
	memOnly := &Manager{support: Support{Memory: true, Base: "/x", Reason: "no cpu here"}}
	none := Unavailable("no cgroup v2 here")
	capped := &Manager{support: Support{Reason: "no cgroup v2 here"}, caps: Policy{MemoryMax: 1 << 30}}
	mem := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20)}
	cpu := &agentpb.OperationResourcePolicy{CpuMaxMillicores: proto.Uint32(250)}
	tests := []struct {
		name    string
		m       *Manager
		op      string
		wire    *agentpb.OperationResourcePolicy
		want    Policy // bound to the context
		wantErr string // in the UNSUPPORTED message
	}{
		{"memory where enforceable", both, "exec", mem, Policy{MemoryMax: 64 << 20}, ""},
		{"caps without a request policy", both, "git", nil, Policy{MemoryMax: 1 << 30}, ""},
		{"request above the cap", both, "exec", &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(8 << 30)}, Policy{MemoryMax: 1 << 30}, ""},
		{"caps do not reach other ops", both, "fs_read", nil, Policy{}, ""},
		{"memory unsupported", none, "exec", mem, Policy{}, "cannot enforce per-op memory limits: no cgroup v2 here"},
		{"cpu unsupported", memOnly, "exec", cpu, Policy{}, "cannot enforce per-op CPU quotas: no cpu here"},
		{"memory where only memory", memOnly, "git", mem, Policy{MemoryMax: 64 << 20}, ""},
		{"an op no leaf holds", both, "fs_write", mem, Policy{}, "limits apply to exec and git only"},
		{"empty policy on an unsupported host", none, "exec", &agentpb.OperationResourcePolicy{}, Policy{}, ""},
		{"caps on an unsupported host bind nothing", capped, "exec", nil, Policy{}, ""},
		{"nil manager", nil, "exec", mem, Policy{}, "not set up"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, err := tc.m.Bind(context.Background(), tc.op, tc.wire)
			if tc.wantErr != "" {
				var ae *agenterr.Error
				if !errors.As(err, &ae) || ae.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || ae.Detail["reason"] != ReasonUnenforceable ||
					!strings.Contains(ae.Message, tc.wantErr) {
					t.Fatalf("err %v, want UNSUPPORTED with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			requested := tc.wire != nil && !tc.want.IsZero()
			if got := PolicyOf(ctx); got != tc.want || Requested(ctx) != requested || (NoteRoom(ctx) > 0) != !tc.want.IsZero() {
				t.Fatalf("bound %+v (requested %v, note room %d), want %+v", got, Requested(ctx), NoteRoom(ctx), tc.want)
			}
		})
	}
	// A zero limit is malformed, not "none".
	_, err := both.Bind(context.Background(), "exec", &agentpb.OperationResourcePolicy{CpuMaxMillicores: proto.Uint32(0)})
	if ae := (*agenterr.Error)(nil); !errors.As(err, &ae) || ae.Code != agentpb.ErrorCode_ERROR_CODE_OS || !strings.Contains(ae.Message, "cpu_max_millicores is 0") {
		t.Fatalf("zero cpu: %v", err)
	}
}

func TestOutcomeNote(t *testing.T) {
	if (Outcome{MemoryMax: 1 << 20}).Note() != "" {
		t.Fatal("a note without an OOM kill")
	}
	n := Outcome{OOMKills: 3, MemoryMax: 1 << 62}.Note()
	if !strings.Contains(n, "out of memory") || !strings.Contains(n, "3 process") || len(n) > noteRoom {
		t.Fatalf("note %q (%d bytes, room %d)", n, len(n), noteRoom)
	}
	// A leaf-less op: Place gives nil, whose Close is a no-op.
	var l *Leaf
	if l.Close() != (Outcome{}) || l.Dir() != "" || NoteRoom(context.Background()) != 0 {
		t.Fatal("nil leaf")
	}
}

// BenchmarkBind is what the dispatcher pays per op for resource limits:
// every op passes Bind (ping included), so its no-policy path must be
// negligible against a dispatch.
func BenchmarkBind(b *testing.B) {
	m := &Manager{support: Support{Memory: true, CPU: true, Base: "/x"}, caps: Policy{MemoryMax: 1 << 30}}
	none := Unavailable("no cgroup v2 here")
	mem := &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20)}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		m    *Manager
		op   string
		p    *agentpb.OperationResourcePolicy
	}{
		{"ping_no_policy", m, "ping", nil},
		{"exec_caps_bound", m, "exec", nil},
		{"exec_policy_bound", m, "exec", mem},
		{"exec_policy_refused", none, "exec", mem},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				_, _ = bc.m.Bind(ctx, bc.op, bc.p)
			}
		})
	}
}
