//go:build linux

package cgroup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// This host's own detection. On a hybrid host (the machine these tests were
// written on: cgroup v1 holds memory and cpu, cgroup2 at
// /sys/fs/cgroup/unified offers only hugetlb) it must report no support and
// name where the controllers went.
func TestDetectThisHost(t *testing.T) {
	s := Detect(nil, Policy{}).Support()
	t.Logf("support: %+v", s)
	if s.Memory || s.CPU {
		if s.Base == "" {
			t.Fatalf("support without a base: %+v", s)
		}
		if _, err := os.Stat(filepath.Join(s.Base, "cgroup.subtree_control")); err != nil {
			t.Fatalf("base is not a cgroup: %v", err)
		}
		return
	}
	if s.Reason == "" {
		t.Fatal("no support and no reason")
	}
	mounts, err := readMounts("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.fstype == "cgroup" && slices.Contains(m.superOpts, "memory") {
			if !strings.Contains(s.Reason, "memory is bound to the cgroup v1 hierarchy at "+m.point) {
				t.Fatalf("hybrid host, reason %q does not say where memory went", s.Reason)
			}
		}
	}
}

// fakeHost is a directory tree that mimics cgroupfs, with its own
// mountinfo and /proc/self/cgroup. A fake is used only because real cgroup
// v2 memory and cpu controllers cannot exist on the host these tests were
// written on (they are bound to cgroup v1 there, and remounting is out of
// bounds); TestMemoryHogIsOOMKilledInItsLeaf in agent/ covers the real
// kernel wherever it has them. The fake keeps what the kernel does where
// the code relies on it: interface files exist, rmdir takes them along.
type fakeHost struct {
	root  string // the cgroup2 mount point
	paths hostPaths
}

const fakePid = 4242

func newFakeHost(t *testing.T, self string, extraMounts ...string) *fakeHost {
	t.Helper()
	dir := t.TempDir()
	h := &fakeHost{root: filepath.Join(dir, "cgroup")}
	mountinfo := fmt.Sprintf("41 31 0:38 / %s rw,relatime - cgroup2 cgroup2 rw\n", h.root) + strings.Join(extraMounts, "")
	h.paths = hostPaths{mountinfo: filepath.Join(dir, "mountinfo"), cgroup: filepath.Join(dir, "self-cgroup"), pid: fakePid}
	h.write(t, "../mountinfo", mountinfo)
	h.write(t, "../self-cgroup", "0::"+self+"\n")
	return h
}

func (h *fakeHost) write(t *testing.T, rel, content string) {
	t.Helper()
	p := filepath.Join(h.root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h *fakeHost) read(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// markDelegated sets systemd's delegation mark as systemd does.
func markDelegated(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Setxattr(dir, "trusted.delegate", []byte("1"), 0); err != nil {
		if err := unix.Setxattr(dir, "user.delegate", []byte("1"), 0); err != nil {
			t.Skipf("cannot set a delegation xattr on the test's filesystem: %v", err)
		}
	}
}

const v1Memory = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"

func TestDetectOnAFakeCgroupfs(t *testing.T) {
	const unit = "system.slice/opengeni-agent.service"
	tests := []struct {
		name   string
		self   string
		setup  func(t *testing.T, h *fakeHost)
		mounts []string
		want   Support // Base relative to the mount; Reason: a substring
		check  func(t *testing.T, h *fakeHost)
	}{
		{
			name: "systemd DelegateSubgroup=supervisor", self: "/" + unit + "/supervisor",
			setup: func(t *testing.T, h *fakeHost) {
				h.write(t, unit+"/cgroup.controllers", "cpuset cpu io memory pids\n")
				h.write(t, unit+"/cgroup.subtree_control", "")
				h.write(t, unit+"/supervisor/cgroup.procs", "4242\n")
				if err := os.Mkdir(filepath.Join(h.root, unit, "op-17-3"), 0o755); err != nil { // a crashed agent's empty leaf
					t.Fatal(err)
				}
			},
			want: Support{Memory: true, CPU: true, Base: unit},
			check: func(t *testing.T, h *fakeHost) {
				if got := fields(h.read(t, unit+"/cgroup.subtree_control")); !hasAll(got, wanted) {
					t.Fatalf("subtree_control %q", got)
				}
				if _, err := os.Stat(filepath.Join(h.root, unit, "op-17-3")); !os.IsNotExist(err) {
					t.Fatalf("stale leaf kept: %v", err)
				}
			},
		},
		{
			name: "controllers already enabled are left alone", self: "/" + unit + "/supervisor",
			setup: func(t *testing.T, h *fakeHost) {
				h.write(t, unit+"/cgroup.controllers", "cpu memory pids\n")
				h.write(t, unit+"/cgroup.subtree_control", "cpu memory pids\n")
			},
			want: Support{Memory: true, CPU: true, Base: unit},
			check: func(t *testing.T, h *fakeHost) {
				if got := h.read(t, unit+"/cgroup.subtree_control"); got != "cpu memory pids\n" {
					t.Fatalf("subtree_control rewritten: %q", got)
				}
			},
		},
		{
			name: "root cgroup of a namespace", self: "/",
			setup: func(t *testing.T, h *fakeHost) {
				h.write(t, "cgroup.controllers", "cpu memory\n")
				h.write(t, "cgroup.subtree_control", "")
			},
			want: Support{Memory: true, CPU: true, Base: rootBase},
			check: func(t *testing.T, h *fakeHost) {
				if got := fields(h.read(t, "cgroup.subtree_control")); !hasAll(got, wanted) {
					t.Fatalf("root subtree_control %q", got)
				}
				if got := fields(h.read(t, rootBase+"/cgroup.subtree_control")); !hasAll(got, wanted) {
					t.Fatalf("base subtree_control %q", got)
				}
			},
		},
		{
			name: "delegated cgroup the agent holds alone: it moves to supervisor", self: "/" + unit,
			setup: func(t *testing.T, h *fakeHost) {
				h.write(t, unit+"/cgroup.controllers", "cpu memory\n")
				h.write(t, unit+"/cgroup.procs", "4242\n")
				markDelegated(t, filepath.Join(h.root, unit))
			},
			want: Support{Memory: true, CPU: true, Base: unit},
			check: func(t *testing.T, h *fakeHost) {
				if got := h.read(t, unit+"/supervisor/cgroup.procs"); got != "4242" {
					t.Fatalf("agent not moved: %q", got)
				}
			},
		},
		{
			name: "systemd's cgroup without Delegate=yes is left alone", self: "/" + unit,
			setup: func(t *testing.T, h *fakeHost) {
				h.write(t, unit+"/cgroup.controllers", "cpu memory\n")
				h.write(t, unit+"/cgroup.procs", "4242\n")
			},
			want: Support{Reason: "belongs to systemd and is not delegated to it"},
			check: func(t *testing.T, h *fakeHost) {
				if _, err := os.Stat(filepath.Join(h.root, unit, "supervisor")); !os.IsNotExist(err) {
					t.Fatalf("reorganised systemd's cgroup: %v", err)
				}
			},
		},
		{
			name: "cgroup shared with other processes", self: "/agents/shared",
			setup: func(t *testing.T, h *fakeHost) {
				h.write(t, "agents/shared/cgroup.controllers", "cpu memory\n")
				h.write(t, "agents/shared/cgroup.procs", "900\n4242\n")
			},
			want: Support{Reason: "also holds other processes (2 in all)"},
		},
		{
			name: "memory only", self: "/" + unit + "/supervisor",
			setup: func(t *testing.T, h *fakeHost) { h.write(t, unit+"/cgroup.controllers", "memory pids\n") },
			want:  Support{Memory: true, Base: unit, Reason: "has no cpu controller (it offers: memory pids)"},
		},
		{
			name: "hybrid host", self: "/", mounts: []string{v1Memory},
			setup: func(t *testing.T, h *fakeHost) { h.write(t, "cgroup.controllers", "hugetlb\n") },
			want:  Support{Reason: "offers no memory or cpu controller to " + "<root> (it offers: hugetlb); memory is bound to the cgroup v1 hierarchy at /sys/fs/cgroup/memory"},
		},
		{
			name: "no cgroup v2 process line", self: "",
			setup: func(t *testing.T, h *fakeHost) { h.write(t, "../self-cgroup", "4:memory:/\n") },
			want:  Support{Reason: "in no cgroup v2 hierarchy"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(t, tc.self, tc.mounts...)
			tc.setup(t, h)
			got := detect(h.paths)
			want := tc.want
			if want.Base != "" {
				want.Base = filepath.Join(h.root, want.Base)
			}
			want.Reason = strings.ReplaceAll(want.Reason, "<root>", h.root)
			if got.Memory != want.Memory || got.CPU != want.CPU || (want.Base != "" && got.Base != want.Base) ||
				(want.Reason == "") != (got.Reason == "") || !strings.Contains(got.Reason, want.Reason) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			if tc.check != nil {
				tc.check(t, h)
			}
		})
	}

	t.Run("no cgroup2 mount", func(t *testing.T) {
		h := newFakeHost(t, "/")
		h.write(t, "../mountinfo", v1Memory)
		if got := detect(h.paths); got.Memory || !strings.Contains(got.Reason, "no cgroup v2 filesystem is mounted; memory is bound to the cgroup v1 hierarchy") {
			t.Fatalf("got %+v", got)
		}
	})
}

// The leaf's files on the fake cgroupfs: the clamped policy is written as
// the kernel reads it, the command is set to start inside the leaf, and
// Close reads the OOM kills and removes the leaf.
func TestLeafOnAFakeCgroupfs(t *testing.T) {
	const unit = "system.slice/opengeni-agent.service"
	h := newFakeHost(t, "/"+unit+"/supervisor")
	h.write(t, unit+"/cgroup.controllers", "cpu memory\n")
	s := detect(h.paths)
	if !s.Memory || !s.CPU {
		t.Fatalf("support %+v", s)
	}
	m := newManager(nil, Policy{MemoryMax: 32 << 20}, s, fakePid)
	m.rmdir = os.RemoveAll // the kernel's rmdir takes a leaf's interface files along

	ctx, err := m.Bind(context.Background(), "exec", &agentpb.OperationResourcePolicy{
		MemoryMaxBytes: proto.Uint64(64 << 20), MemoryHighBytes: proto.Uint64(16 << 20), CpuMaxMillicores: proto.Uint32(250)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	leaf := Place(ctx, cmd)
	if leaf == nil || cmd.Err != nil {
		t.Fatal(cmd.Err)
	}
	rel, _ := filepath.Rel(h.root, leaf.Dir())
	if rel != fmt.Sprintf("%s/op-%d-1", unit, fakePid) {
		t.Fatalf("leaf %s", rel)
	}
	for file, want := range map[string]string{
		"memory.max":  "33554432", // 64 MiB asked, 32 MiB cap
		"memory.high": "16777216",
		"cpu.max":     "25000 100000", // a quarter of a CPU
	} {
		if got := h.read(t, rel+"/"+file); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	if a := cmd.SysProcAttr; a == nil || !a.UseCgroupFD || a.CgroupFD < 0 {
		t.Fatalf("command not placed in the leaf: %+v", a)
	}

	// The kernel's view after the op: empty, two processes OOM-killed.
	h.write(t, rel+"/cgroup.events", "populated 0\nfrozen 0\n")
	h.write(t, rel+"/memory.events", "low 0\nhigh 12\nmax 40\noom 2\noom_kill 2\noom_group_kill 1\n")
	out := leaf.Close()
	if !out.OOMKilled() || out.OOMKills != 2 || out.MemoryMax != 32<<20 || !strings.Contains(out.Note(), "memory.max 33554432") {
		t.Fatalf("outcome %+v note %q", out, out.Note())
	}
	if _, err := os.Stat(leaf.Dir()); !os.IsNotExist(err) {
		t.Fatalf("leaf not removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(leaf.Dir(), "cgroup.kill")); !os.IsNotExist(err) {
		t.Fatal("an empty leaf was killed")
	}
	if again := leaf.Close(); again != out {
		t.Fatalf("second Close %+v", again)
	}

	// Without a bound policy nothing is placed.
	plain := exec.Command("true")
	if l := Place(context.Background(), plain); l != nil || plain.Err != nil || plain.SysProcAttr != nil {
		t.Fatalf("placed without a policy: %v %v %+v", l, plain.Err, plain.SysProcAttr)
	}
}

// A leaf that cannot be made (the delegated cgroup went away) fails the
// command's Start with a typed OS error naming the policy, never running it
// uncontained.
func TestPlaceFailsClosed(t *testing.T) {
	m := newManager(nil, Policy{}, Support{Memory: true, Base: filepath.Join(t.TempDir(), "gone")}, fakePid)
	ctx, err := m.Bind(context.Background(), "exec", &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	if l := Place(ctx, cmd); l != nil || cmd.Err == nil || !strings.Contains(cmd.Err.Error(), "memory.max=1048576") || cmd.SysProcAttr != nil {
		t.Fatalf("Place: %v %v", l, cmd.Err)
	}
	// Start fails with it: nothing runs.
	if err := cmd.Start(); err != cmd.Err {
		t.Fatalf("Start: %v", err)
	}
}

// realScratch makes a scratch cgroup under this process's own cgroup v2
// directory, or skips saying why it cannot.
func realScratch(t *testing.T) string {
	t.Helper()
	mounts, err := readMounts("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(mounts, func(m mount) bool { return m.fstype == "cgroup2" && m.root == "/" })
	if i < 0 {
		t.Skip("no cgroup v2 mount here")
	}
	rel, err := ownCgroup("/proc/self/cgroup")
	if err != nil {
		t.Skip(err.Error())
	}
	dir := filepath.Join(mounts[i].point, rel, fmt.Sprintf("opengeni-agent-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a cgroup under this process's own (%v): not root or not delegated", err)
	}
	t.Cleanup(func() { _ = os.Remove(dir) })
	return dir
}

// The leaf's life on the real kernel, without the memory and cpu
// controllers (which this host's cgroup v2 lacks): the child starts inside
// the leaf (CLONE_INTO_CGROUP), so does what it forks; Close kills what the
// command left running, waits for the leaf to empty and removes it.
func TestLeafLifecycleOnTheRealKernel(t *testing.T) {
	base := realScratch(t)
	m := newManager(nil, Policy{}, Support{Base: base}, os.Getpid())
	leaf, err := m.newLeaf(Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer leaf.Close()
	cmd := exec.Command("sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!")
	leaf.attach(cmd)
	out, err := cmd.Output() // sh exits at once; its background sleep stays in the leaf
	if err != nil {
		t.Fatal(err)
	}
	bg := strings.TrimSpace(string(out))
	cg, err := os.ReadFile("/proc/" + bg + "/cgroup")
	if err != nil {
		t.Fatalf("background child %s: %v", bg, err)
	}
	if !strings.HasSuffix(strings.TrimSpace(string(cg)), "/"+filepath.Base(leaf.Dir())) {
		t.Fatalf("background child's cgroup %q, leaf %s", cg, leaf.Dir())
	}
	if !leaf.populated() {
		t.Fatal("leaf reads empty while the child lives")
	}
	if o := leaf.Close(); o.OOMKilled() {
		t.Fatalf("outcome %+v", o)
	}
	if _, err := os.Stat(leaf.Dir()); !os.IsNotExist(err) {
		t.Fatalf("leaf not removed: %v", err)
	}
	// Gone, or a zombie waiting for init: it no longer runs.
	if st, err := os.ReadFile("/proc/" + bg + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Fatalf("background child still runs: %s", st)
	}
}

// On the real kernel a limit the leaf cannot take (no memory controller
// here) fails the op closed, and the half-made leaf is removed.
func TestLimitWithoutTheControllerFailsClosedOnTheRealKernel(t *testing.T) {
	base := realScratch(t)
	if slices.Contains(fields(readString(filepath.Join(base, "cgroup.controllers"))), "memory") {
		t.Skip("this cgroup has the memory controller")
	}
	m := newManager(nil, Policy{}, Support{Memory: true, Base: base}, os.Getpid())
	ctx, err := m.Bind(context.Background(), "exec", &agentpb.OperationResourcePolicy{MemoryMaxBytes: proto.Uint64(64 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("true")
	if l := Place(ctx, cmd); l != nil || cmd.Err == nil {
		t.Fatalf("placed: %v %v", l, cmd.Err)
	}
	if left, _ := filepath.Glob(filepath.Join(base, leafPrefix+"*")); len(left) != 0 {
		t.Fatalf("half-made leaves left: %v", left)
	}
}
