//go:build linux

package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// supervisorGroup is where the agent process itself lives inside its
// delegated cgroup (the unit's DelegateSubgroup=supervisor): cgroup v2 lets
// a cgroup hand memory and cpu to children only while it holds no process
// itself, so the agent sits beside its op leaves, not above them.
const supervisorGroup = "supervisor"

// rootBase is the cgroup made for the op leaves when the agent runs in the
// root cgroup of a cgroup v2 mount (a container with its own namespace).
const rootBase = "opengeni-agent"

// leafPrefix names op leaves: op-<agent pid>-<n>.
const leafPrefix = "op-"

// wanted are the controllers a leaf uses.
var wanted = []string{"memory", "cpu"}

// hostPaths are where detection reads the process's mounts and cgroup (the
// real /proc/self files, or a test's fake).
type hostPaths struct {
	mountinfo string
	cgroup    string
	pid       int
}

var detectHost = sync.OnceValue(func() Support {
	return detect(hostPaths{mountinfo: "/proc/self/mountinfo", cgroup: "/proc/self/cgroup", pid: os.Getpid()})
})

// Detect finds this process's delegated cgroup v2 subtree and readies it for
// op leaves (once per process: it may move the agent into its supervisor
// group), and returns a Manager with the owner's caps.
func Detect(log *slog.Logger, caps Policy) *Manager {
	return newManager(log, caps, detectHost(), os.Getpid())
}

func newManager(log *slog.Logger, caps Policy, s Support, pid int) *Manager {
	m := NewAt(log, caps, s)
	m.pid = pid
	return m
}

// removeDir removes an empty cgroup (its interface files go with it).
func removeDir(dir string) error { return unix.Rmdir(dir) }

type mount struct {
	point, root, fstype string
	superOpts           []string
}

// detect works out where op leaves can go and what they can limit, and
// says why when they cannot.
func detect(p hostPaths) Support {
	mounts, err := readMounts(p.mountinfo)
	if err != nil {
		return Support{Reason: "cannot read the mount table: " + err.Error()}
	}
	v1 := v1Bindings(mounts)
	i := slices.IndexFunc(mounts, func(m mount) bool { return m.fstype == "cgroup2" })
	if i < 0 {
		return Support{Reason: "no cgroup v2 filesystem is mounted" + v1}
	}
	mnt := mounts[i]
	rel, err := ownCgroup(p.cgroup)
	if err != nil {
		return Support{Reason: err.Error()}
	}
	if mnt.root != "/" {
		r, ok := strings.CutPrefix(rel, mnt.root)
		if !ok {
			return Support{Reason: fmt.Sprintf("the agent's cgroup %s is outside the cgroup v2 mount at %s (root %s)", rel, mnt.point, mnt.root)}
		}
		rel = "/" + strings.TrimPrefix(r, "/")
	}
	own := filepath.Join(mnt.point, rel)

	// Where the leaves go, and which cgroup's controllers they can use.
	var base, offering string
	switch {
	case rel != "/" && filepath.Base(own) == supervisorGroup:
		base = filepath.Dir(own)
		offering = base
	case rel == "/":
		base, offering = filepath.Join(own, rootBase), own
	default:
		base, offering = own, own
	}
	have := fields(readString(filepath.Join(offering, "cgroup.controllers")))
	s := Support{Memory: slices.Contains(have, "memory"), CPU: slices.Contains(have, "cpu"), Base: base}
	if !s.Memory && !s.CPU {
		return Support{Reason: fmt.Sprintf("the cgroup v2 hierarchy at %s offers no memory or cpu controller to %s (it offers: %s)%s",
			mnt.point, offering, orNone(have), v1)}
	}
	if err := unix.Access(offering, unix.W_OK); err != nil {
		return Support{Reason: fmt.Sprintf("the agent's cgroup %s is not delegated to it (not writable by uid %d); run the agent as its service, whose unit delegates a subtree (Delegate=yes)",
			offering, os.Getuid())}
	}
	if err := prepare(p, own, base, rel == "/", s); err != nil {
		return Support{Reason: err.Error()}
	}
	var missing []string
	if !s.Memory {
		missing = append(missing, "memory")
	}
	if !s.CPU {
		missing = append(missing, "cpu")
	}
	if len(missing) > 0 {
		s.Reason = fmt.Sprintf("the delegated cgroup %s has no %s controller (it offers: %s)%s", base, strings.Join(missing, " or "), orNone(have), v1)
	}
	return s
}

// prepare readies base for leaves: in the root cgroup it enables the
// controllers there and makes base; in a delegated cgroup the agent still
// sits in, it moves the agent to its supervisor group (what
// DelegateSubgroup=supervisor does on systemd ≥ 254); then it enables the
// controllers for base's children and clears leaves a crashed agent left.
func prepare(p hostPaths, own, base string, atRoot bool, s Support) error {
	enable := "+memory +cpu"
	switch {
	case !s.Memory:
		enable = "+cpu"
	case !s.CPU:
		enable = "+memory"
	}
	switch {
	case atRoot:
		if err := enableControllers(own, enable); err != nil {
			return err
		}
		if err := os.Mkdir(base, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("make the op cgroup %s: %w", base, err)
		}
	case own == base:
		if systemdOwned(own) && !delegated(own) {
			return fmt.Errorf("the agent's cgroup %s belongs to systemd and is not delegated to it; reinstall the service (opengeni-agent service install) so its unit has Delegate=yes", own)
		}
		procs := fields(readString(filepath.Join(own, "cgroup.procs")))
		if len(procs) != 1 || procs[0] != strconv.Itoa(p.pid) {
			return fmt.Errorf("the agent's cgroup %s also holds other processes (%d in all), so it cannot hand controllers to op cgroups; run the agent as its service (Delegate=yes, DelegateSubgroup=%s)",
				own, len(procs), supervisorGroup)
		}
		sup := filepath.Join(own, supervisorGroup)
		if err := os.Mkdir(sup, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("make the supervisor cgroup %s: %w", sup, err)
		}
		if err := writeFile(filepath.Join(sup, "cgroup.procs"), strconv.Itoa(p.pid)); err != nil {
			return fmt.Errorf("move the agent into %s: %w", sup, err)
		}
	}
	if err := enableControllers(base, enable); err != nil {
		return err
	}
	stale, _ := filepath.Glob(filepath.Join(base, leafPrefix+"*"))
	for _, dir := range stale {
		_ = unix.Rmdir(dir) // an empty leaf of a crashed agent; a busy one stays
	}
	return nil
}

// systemdOwned reports a cgroup systemd made for a unit: it must not be
// reorganised unless the unit delegates it.
func systemdOwned(dir string) bool {
	return strings.HasSuffix(dir, ".service") || strings.HasSuffix(dir, ".scope")
}

// delegated reports systemd's delegation mark on a cgroup (systemd ≥ 251
// sets trusted.delegate, or user.delegate in a user manager, to "1").
func delegated(dir string) bool {
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		buf := make([]byte, 8)
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && string(buf[:n]) == "1" {
			return true
		}
	}
	return false
}

// enableControllers writes enable ("+memory +cpu") to dir's
// cgroup.subtree_control unless it already has them, and checks it took.
func enableControllers(dir, enable string) error {
	path := filepath.Join(dir, "cgroup.subtree_control")
	want := strings.Fields(strings.ReplaceAll(enable, "+", ""))
	if !hasAll(fields(readString(path)), want) {
		if err := writeFile(path, enable); err != nil {
			return fmt.Errorf("enable %s for op cgroups in %s: %w", strings.Join(want, " and "), dir, err)
		}
	}
	if got := fields(readString(path)); !hasAll(got, want) {
		return fmt.Errorf("%s has %q after enabling %s", path, strings.Join(got, " "), strings.Join(want, " and "))
	}
	return nil
}

func hasAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// readMounts parses /proc/self/mountinfo.
func readMounts(path string) ([]mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unescape := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	var out []mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 5 || len(b) < 3 {
			continue
		}
		out = append(out, mount{root: unescape.Replace(a[3]), point: unescape.Replace(a[4]), fstype: b[0], superOpts: strings.Split(b[2], ",")})
	}
	return out, sc.Err()
}

// v1Bindings names where a hybrid host bound the controllers to cgroup v1
// (a controller serves one hierarchy only), as a reason suffix.
func v1Bindings(mounts []mount) string {
	var out []string
	for _, c := range wanted {
		for _, m := range mounts {
			if m.fstype == "cgroup" && slices.Contains(m.superOpts, c) {
				out = append(out, fmt.Sprintf("%s is bound to the cgroup v1 hierarchy at %s", c, m.point))
				break
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return "; " + strings.Join(out, ", ") + " (a hybrid cgroup host: per-op limits need these controllers in cgroup v2)"
}

// ownCgroup is the process's cgroup v2 path ("0::/path" in /proc/self/cgroup).
func ownCgroup(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read the agent's cgroup: %w", err)
	}
	for line := range strings.Lines(string(b)) {
		if rel, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			return rel, nil
		}
	}
	return "", errors.New("the agent is in no cgroup v2 hierarchy (no 0:: line in /proc/self/cgroup)")
}

func readString(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// fields splits a cgroup list file; a fake cgroupfs may keep the "+"
// of what was written.
func fields(s string) []string {
	f := strings.Fields(s)
	for i := range f {
		f[i] = strings.TrimPrefix(f[i], "+")
	}
	return f
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, " ")
}

// writeFile writes one cgroup interface file (created only on a fake
// cgroupfs: the kernel's files always exist).
func writeFile(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}

// writeIfPresent writes an interface file only some kernels have.
func writeIfPresent(path, value string) error {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	return writeFile(path, value)
}

// cpuPeriod is the cpu.max period in microseconds; a millicore is a
// thousandth of it, and the kernel's smallest quota is 1 ms.
const (
	cpuPeriod   = 100000
	cpuMinQuota = 1000
)

func (m *Manager) newLeaf(p Policy) (*Leaf, error) {
	if m == nil || m.support.Base == "" {
		return nil, errors.New("no delegated cgroup")
	}
	dir := filepath.Join(m.support.Base, fmt.Sprintf("%s%d-%d", leafPrefix, m.pid, m.seq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	l := &Leaf{m: m, dir: dir, policy: p, fd: -1, out: Outcome{MemoryMax: p.MemoryMax}}
	if err := l.configure(); err != nil {
		l.Close()
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		l.Close()
		return nil, err
	}
	l.fd = fd
	return l, nil
}

// configure writes the limits. memory.high goes first, so a lower high than
// max throttles before the hard limit is ever in place alone; swap is off
// under a memory limit (else the op would swap instead of being held to
// it), and an OOM kill takes the whole op, not one of its processes.
func (l *Leaf) configure() error {
	p := l.policy
	var w []func() error
	if p.MemoryHigh != 0 {
		w = append(w, func() error {
			return writeFile(filepath.Join(l.dir, "memory.high"), strconv.FormatUint(p.MemoryHigh, 10))
		})
	}
	if p.MemoryMax != 0 {
		w = append(w,
			func() error {
				return writeFile(filepath.Join(l.dir, "memory.max"), strconv.FormatUint(p.MemoryMax, 10))
			},
			func() error { return writeIfPresent(filepath.Join(l.dir, "memory.swap.max"), "0") },
			func() error { return writeIfPresent(filepath.Join(l.dir, "memory.oom.group"), "1") })
	}
	if p.CPUMillicores != 0 {
		quota := max(uint64(p.CPUMillicores)*cpuPeriod/1000, cpuMinQuota)
		w = append(w, func() error {
			return writeFile(filepath.Join(l.dir, "cpu.max"), fmt.Sprintf("%d %d", quota, cpuPeriod))
		})
	}
	for _, f := range w {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// attach makes cmd start inside the leaf.
func (l *Leaf) attach(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = l.fd
}

// emptyWait bounds how long Close waits for killed processes to leave the
// leaf (exit is asynchronous after SIGKILL).
const emptyWait = 10 * time.Second

func (l *Leaf) teardown() Outcome {
	out := l.out
	if l.fd >= 0 {
		_ = unix.Close(l.fd)
		l.fd = -1
	}
	if err := l.killAll(); err != nil {
		l.m.log.Warn("could not kill what was left in the op's cgroup", "cgroup", l.dir, "err", err)
	}
	populated := l.waitEmpty()
	out.OOMKills = eventCount(readString(filepath.Join(l.dir, "memory.events")), "oom_kill")
	if out.OOMKilled() {
		l.m.log.Info("op hit its memory limit; the kernel killed processes in its cgroup",
			"cgroup", l.dir, "memory_max", l.policy.MemoryMax, "oom_kills", out.OOMKills)
	}
	if populated {
		l.m.log.Warn("op cgroup still has processes after the kill; leaving it", "cgroup", l.dir)
		return out
	}
	if err := l.m.rmdir(l.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		l.m.log.Warn("could not remove the op's cgroup", "cgroup", l.dir, "err", err)
	}
	return out
}

// killAll SIGKILLs every process in the leaf: cgroup.kill (Linux ≥ 5.14)
// reaches them all at once, even ones forking; older kernels get a kill per
// listed pid.
func (l *Leaf) killAll() error {
	if !l.populated() {
		return nil
	}
	if err := writeFile(filepath.Join(l.dir, "cgroup.kill"), "1"); err == nil {
		return nil
	}
	var errs []error
	for _, s := range fields(readString(filepath.Join(l.dir, "cgroup.procs"))) {
		if pid, err := strconv.Atoi(s); err == nil {
			if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// populated reads cgroup.events "populated": 1 while any process is in the
// leaf (a missing file counts as empty).
func (l *Leaf) populated() bool {
	return eventCount(readString(filepath.Join(l.dir, "cgroup.events")), "populated") != 0
}

// waitEmpty waits, bounded, for the leaf's processes to be gone, and
// reports whether some are still there.
func (l *Leaf) waitEmpty() bool {
	deadline := time.Now().Add(emptyWait)
	for step := time.Millisecond; l.populated(); step = min(2*step, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(step)
	}
	return false
}

// eventCount reads "key N" from a flat-keyed cgroup file.
func eventCount(s, key string) uint64 {
	for line := range strings.Lines(s) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == key {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
