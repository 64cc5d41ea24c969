package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const testWS = "11111111-1111-1111-1111-111111111111"

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 6, 22, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func (c *clock) Set(t time.Time)         { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type env struct {
	js    jetstream.JetStream
	nc    *nats.Conn
	store *Store
	clock *clock
}

func newEnv(tb testing.TB, mod ...func(*Options)) *env {
	tb.Helper()
	srv := natstest.Start(tb, natstest.JetStream(tb.TempDir()))
	nc := natstest.Connect(tb, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	c := newClock()
	opts := Options{Now: c.Now}
	for _, m := range mod {
		m(&opts)
	}
	s, err := New(context.Background(), js, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{js: js, nc: nc, store: s, clock: c}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func (e *env) enroll(t testing.TB, pubkey string) Enrollment {
	t.Helper()
	en, err := e.store.UpsertEnrollment(ctxT(t), FinalizeInput{WorkspaceID: testWS, Pubkey: pubkey, OS: "linux", Arch: "x86_64", MachineName: "  box  ", HasDisplay: true, AllowScreenControl: true})
	if err != nil {
		t.Fatal(err)
	}
	return en
}

func TestEnrollmentLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	a := e.enroll(t, "pk+/A")
	if !a.Active() || a.Exposure != "whole-machine" || a.SandboxName != "box" || a.SandboxID == "" || a.RevokedAt != nil {
		t.Fatalf("enrollment %+v", a)
	}
	e.clock.Advance(time.Second)
	b := e.enroll(t, "pk-B")
	if b.ID == a.ID {
		t.Fatal("distinct pubkeys share an id")
	}
	list, err := e.store.ListEnrollments(ctx, testWS, "")
	if err != nil || len(list) != 2 || list[0].ID != b.ID || list[1].ID != a.ID {
		t.Fatalf("list newest first: %+v %v", list, err)
	}
	if ok, err := e.store.RevokeEnrollment(ctx, testWS, a.ID); !ok || err != nil {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	if ok, _ := e.store.RevokeEnrollment(ctx, testWS, a.ID); ok {
		t.Fatal("revoking twice flipped again")
	}
	if ok, _ := e.store.RevokeEnrollment(ctx, testWS, "nope"); ok {
		t.Fatal("revoked an unknown enrollment")
	}
	got, _ := e.store.GetEnrollment(ctx, testWS, a.ID)
	if got.Status != "revoked" || got.RevokedAt == nil {
		t.Fatalf("after revoke %+v", got)
	}
	active, _ := e.store.ListEnrollments(ctx, testWS, "active")
	if len(active) != 1 || active[0].ID != b.ID {
		t.Fatalf("active: %+v", active)
	}
	// Re-enrolling the same pubkey reactivates the same id and sandbox.
	again, err := e.store.UpsertEnrollment(ctx, FinalizeInput{WorkspaceID: testWS, Pubkey: "pk+/A", OS: "macos", Arch: "aarch64"})
	if err != nil || again.ID != a.ID || again.SandboxID != a.SandboxID || !again.Active() || again.RevokedAt != nil || again.OS != "macos" || again.AllowScreenControl {
		t.Fatalf("re-enroll: %+v %v", again, err)
	}
	// Another workspace does not see them.
	if other, _ := e.store.ListEnrollments(ctx, "22222222-2222-2222-2222-222222222222", ""); len(other) != 0 {
		t.Fatalf("other workspace: %+v", other)
	}
	if _, err := e.store.GetEnrollment(ctx, testWS, "../x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("invalid id: %v", err)
	}
}

func TestSandboxName(t *testing.T) {
	long := make([]rune, 300)
	for i := range long {
		long[i] = 'é'
	}
	for _, tc := range []struct{ name, os, want string }{
		{"  laptop ", "linux", "laptop"},
		{"", "macos", "macos machine"},
		{"   ", "windows", "windows machine"},
		{string(long), "linux", string(long[:256])},
	} {
		if got := SandboxName(tc.name, tc.os); got != tc.want {
			t.Errorf("SandboxName(%q) = %q", tc.name, got)
		}
	}
}

func TestConcurrentUpsertSamePubkey(t *testing.T) {
	e := newEnv(t)
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			en, err := e.store.UpsertEnrollment(ctxT(t), FinalizeInput{WorkspaceID: testWS, Pubkey: "same", OS: "linux"})
			if err != nil {
				t.Error(err)
			}
			ids[i] = en.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("ids differ: %v", ids)
		}
	}
}

func TestDeviceRequests(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	d := DeviceRequest{DeviceCode: "dev-1", UserCode: "ABCD-EFGH", WorkspaceID: testWS, Status: DevicePending, ExpiresAt: e.clock.Now().Add(600 * time.Second)}
	if err := e.store.CreateDeviceRequest(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := e.store.CreateDeviceRequest(ctx, DeviceRequest{DeviceCode: "dev-1", UserCode: "ZZZZ-ZZZZ", Status: DevicePending}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate device code: %v", err)
	}
	if err := e.store.CreateDeviceRequest(ctx, DeviceRequest{DeviceCode: "dev-2", UserCode: "ABCD-EFGH", Status: DevicePending}); !errors.Is(err, ErrExists) {
		t.Fatalf("user code of a pending request reused: %v", err)
	}
	got, err := e.store.DeviceRequestByUserCode(ctx, "ABCD-EFGH")
	if err != nil || got.CodeHash != DeviceCodeHash("dev-1") || got.DeviceCode != "" || got.CreatedAt.IsZero() {
		t.Fatalf("by user code: %+v %v", got, err)
	}
	if got.Expired(e.clock.Now().Add(599*time.Second)) || !got.Expired(e.clock.Now().Add(600*time.Second)) {
		t.Fatal("expiry is expires_at <= now")
	}
	_, changed, err := e.store.UpdateDeviceRequest(ctx, DeviceCodeHash("dev-1"), func(d *DeviceRequest) (bool, error) {
		d.Status = DeviceDenied
		return true, nil
	})
	if !changed || err != nil {
		t.Fatalf("deny: %v %v", changed, err)
	}
	// Unique among pending rows only: the code is free again.
	if err := e.store.CreateDeviceRequest(ctx, DeviceRequest{DeviceCode: "dev-3", UserCode: "ABCD-EFGH", Status: DevicePending}); err != nil {
		t.Fatalf("user code of a denied request: %v", err)
	}
	if got, _ := e.store.DeviceRequestByUserCode(ctx, "ABCD-EFGH"); got.CodeHash != DeviceCodeHash("dev-3") {
		t.Fatalf("newest holder %q", got.CodeHash)
	}
	// No device code is stored: a dump of the bucket yields nothing to poll with.
	kv, err := e.js.KeyValue(ctx, "opengeni_devices")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		entry, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		for _, code := range []string{"dev-1", "dev-2", "dev-3"} {
			if strings.Contains(k, code) || strings.Contains(string(entry.Value()), `"`+code+`"`) {
				t.Fatalf("device code %q stored in %s = %s", code, k, entry.Value())
			}
		}
	}
	if _, err := e.store.GetDeviceRequest(ctx, "missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	if _, _, err := e.store.UpdateDeviceRequest(ctx, "missing", func(*DeviceRequest) (bool, error) { return true, nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}
}

func hello(ws, id string, desktop bool, display *agentpb.Display) *agentpb.Hello {
	return &agentpb.Hello{AgentId: id, WorkspaceId: ws, AgentVersion: "0.1.3", Os: agentpb.Os_OS_LINUX, Arch: agentpb.Arch_ARCH_AARCH64,
		MachineName: "buildbox", WorkspaceRoot: "/home/user",
		Capabilities: &agentpb.Capabilities{Exec: true, Filesystem: true, Git: true, Pty: true, Desktop: desktop, Display: display}}
}

func heartbeat(id string, seq uint64, m *agentpb.MetricsSample) *agentpb.AgentEvent {
	return &agentpb.AgentEvent{AgentId: id, Event: &agentpb.AgentEvent_Heartbeat{Heartbeat: &agentpb.Heartbeat{Seq: seq, UptimeMs: seq * 5000, Metrics: m}}}
}

func publish(t testing.TB, nc *nats.Conn, subject string, m proto.Message) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(subject, b); err != nil {
		t.Fatal(err)
	}
}

func (e *env) ingest(t testing.TB) *Ingestor {
	t.Helper()
	in, err := e.store.Ingest(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	return in
}

// waitHandled waits until the ingestor processed (or failed) n messages.
func waitHandled(t testing.TB, in *Ingestor, n uint64) {
	t.Helper()
	natstest.Eventually(t, 10*time.Second, func() error {
		if got := in.Handled() + in.Failed(); got < n {
			return fmt.Errorf("handled %d of %d", got, n)
		}
		return nil
	})
}

// Next-revision connection subjects: hello and heartbeats renew the
// instance's lease and name it the live instance; another instance is held
// off while the lease lives and admitted once it lapses; GoingOffline
// releases the lease at once.
func TestIngestConnectionLease(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	en, err := e.store.UpsertEnrollment(ctx, FinalizeInput{WorkspaceID: testWS, Pubkey: "pk", OS: "linux"})
	if err != nil {
		t.Fatal(err)
	}
	in := e.ingest(t)
	n := uint64(0)
	step := func(subject string, m proto.Message) {
		t.Helper()
		publish(t, e.nc, subject, m)
		n++
		waitHandled(t, in, n)
	}
	inst1, inst2 := "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	conn := func(inst string) string { return "agent." + testWS + "." + en.ID + ".connection." + inst }
	if err := e.store.ClaimConnection(ctx, testWS, en.ID, inst1); err != nil {
		t.Fatal(err)
	}
	step(conn(inst1)+".hello", hello(testWS, en.ID, false, nil))
	if m, _ := e.store.GetMachine(ctx, testWS, en.ID); m.Instance != inst1 {
		t.Fatalf("live instance %q", m.Instance)
	}
	if got, err := e.store.LiveInstance(ctx, testWS, en.ID); got != inst1 || err != nil {
		t.Fatalf("LiveInstance = %q %v", got, err)
	}
	// Heartbeats keep the lease alive past its TTL, and their telemetry is kept.
	for i := 0; i < 3; i++ {
		e.clock.Advance(ConnectionLeaseTTL / 2)
		step(conn(inst1)+".events", &agentpb.AgentEvent{Event: &agentpb.AgentEvent_Heartbeat{Heartbeat: &agentpb.Heartbeat{Seq: uint64(i), Metrics: &agentpb.MetricsSample{},
			Capacity:  &agentpb.HostCapacitySample{MemAvailableBytes: 1 << 30, FdHeadroom: 1000, Nproc: 2},
			Admission: &agentpb.AdmissionTelemetry{HeavyRunning: uint64(i), HeavyQueued: 3}}}})
		if m, _ := e.store.GetMachine(ctx, testWS, en.ID); m.Heartbeat == nil || m.Heartbeat.Capacity == nil || m.Heartbeat.Capacity.FdHeadroom != 1000 ||
			m.Heartbeat.Admission == nil || m.Heartbeat.Admission.HeavyRunning != uint64(i) || m.Heartbeat.Admission.HeavyQueued != 3 {
			t.Fatalf("telemetry not kept: %+v", m.Heartbeat)
		}
		if err := e.store.ClaimConnection(ctx, testWS, en.ID, inst2); !errors.Is(err, ErrLeaseHeld) {
			t.Fatalf("second instance while the lease lives: %v", err)
		}
	}
	step(conn(inst1)+".events", &agentpb.AgentEvent{Event: &agentpb.AgentEvent_GoingOffline{GoingOffline: &agentpb.GoingOffline{}}})
	if got, _ := e.store.LiveInstance(ctx, testWS, en.ID); got != "" {
		t.Fatalf("LiveInstance after GoingOffline = %q", got)
	}
	if err := e.store.ClaimConnection(ctx, testWS, en.ID, inst2); err != nil {
		t.Fatalf("after GoingOffline: %v", err)
	}
	// Claimed but not announced yet: still routed to the v1 subject.
	if got, _ := e.store.LiveInstance(ctx, testWS, en.ID); got != "" {
		t.Fatalf("LiveInstance before the new instance's hello = %q", got)
	}
	e.clock.Advance(ConnectionLeaseTTL + time.Second)
	if err := e.store.ClaimConnection(ctx, testWS, en.ID, inst1); err != nil {
		t.Fatalf("after the lease lapsed: %v", err)
	}
}

func TestIngestHelloHeartbeatGoingOffline(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	en, err := e.store.UpsertEnrollment(ctx, FinalizeInput{WorkspaceID: testWS, Pubkey: "pk", OS: "linux", HasDisplay: false, AllowScreenControl: true})
	if err != nil {
		t.Fatal(err)
	}
	in := e.ingest(t)
	base := "agent." + testWS + "." + en.ID
	n := uint64(0)
	step := func(subject string, m proto.Message) {
		t.Helper()
		publish(t, e.nc, subject, m)
		n++
		waitHandled(t, in, n)
	}
	live := func(probe bool) control.Liveness {
		t.Helper()
		l, err := e.store.Liveness(ctx, testWS, en.ID, probe)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	// Before anything: never seen → offline (probe missed).
	if l := live(false); l.State != control.StateOffline || l.HasDisplay {
		t.Fatalf("fresh: %+v", l)
	}

	// Hello records the machine and flips hasDisplay (display present).
	step(base+".hello", hello(testWS, en.ID, false, &agentpb.Display{Id: ":99", Width: 1920, Height: 1080, Virtual: true}))
	m, err := e.store.GetMachine(ctx, testWS, en.ID)
	if err != nil || m.OS != "linux" || m.Arch != "aarch64" || m.AgentVersion != "0.1.3" || m.WorkspaceRoot != "/home/user" ||
		m.MachineName != "buildbox" || m.Capabilities == nil || !m.Capabilities.Exec || m.Capabilities.Display == nil ||
		m.Capabilities.Display.Width != 1920 || m.HelloAt == nil || m.LastSeenAt != nil {
		t.Fatalf("machine after hello: %+v %v", m, err)
	}
	if got, _ := e.store.GetEnrollment(ctx, testWS, en.ID); !got.HasDisplay {
		t.Fatal("hello with a display did not set hasDisplay")
	}

	// A heartbeat without metrics is ignored (does not touch last seen).
	step(base+".events", heartbeat(en.ID, 1, nil))
	if m, _ := e.store.GetMachine(ctx, testWS, en.ID); m.LastSeenAt != nil {
		t.Fatal("metrics-less heartbeat touched last seen")
	}

	// A heartbeat with metrics: last seen, latest, first series point.
	sample := &agentpb.MetricsSample{SampledAtMs: 1700000000000, CpuPercent: 12.5, Load1: 1, Load5: 2, Load15: 3, MemUsedBytes: 10, MemTotalBytes: 20,
		DiskUsedBytes: 30, DiskTotalBytes: 40, RunQueue: 4, Gpus: []*agentpb.GpuSample{{Name: "a", UtilPercent: 50, MemUsedBytes: 1, MemTotalBytes: 2}, {Name: "b"}}}
	step(base+".events", heartbeat(en.ID, 2, sample))
	m, _ = e.store.GetMachine(ctx, testWS, en.ID)
	if m.LastSeenAt == nil || !m.LastSeenAt.Equal(e.clock.Now()) || m.LatestMetrics == nil || m.LatestMetrics.CPUPercent != 12.5 ||
		m.LatestMetrics.Contention != 4 || *m.LatestMetrics.GPUUtilPercent != 50 || *m.LatestMetrics.GPUMemTotalBytes != 2 ||
		!m.LatestMetrics.SampledAt.Equal(time.UnixMilli(1700000000000)) || m.Heartbeat.Seq != 2 {
		t.Fatalf("after heartbeat: %+v %+v", m, m.LatestMetrics)
	}
	if l := live(true); l.State != control.StateOnline || !l.HasDisplay || !l.Consented {
		t.Fatalf("heartbeat + probe: %+v", l)
	}
	// Silence: reconnecting up to 30 s inclusive, then offline.
	e.clock.Advance(30 * time.Second)
	if l := live(false); l.State != control.StateReconnecting {
		t.Fatalf("30s after: %+v", l)
	}
	e.clock.Advance(time.Millisecond)
	if l := live(false); l.State != control.StateOffline {
		t.Fatalf("30.001s after: %+v", l)
	}

	// A fresh heartbeat; then GoingOffline reads offline at once, probe or not.
	step(base+".events", heartbeat(en.ID, 3, &agentpb.MetricsSample{}))
	if l := live(false); l.State != control.StateReconnecting {
		t.Fatalf("fresh heartbeat: %+v", l)
	}
	step(base+".events", &agentpb.AgentEvent{AgentId: en.ID, Event: &agentpb.AgentEvent_GoingOffline{GoingOffline: &agentpb.GoingOffline{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP}}})
	if l := live(true); l.State != control.StateOffline {
		t.Fatalf("going offline: %+v", l)
	}
	if m, _ := e.store.GetMachine(ctx, testWS, en.ID); m.WentOfflineReason != "user_stop" {
		t.Fatalf("reason %q", m.WentOfflineReason)
	}
	// The reconnect Hello clears it.
	step(base+".hello", hello(testWS, en.ID, false, nil))
	if l := live(true); l.State != control.StateOnline || l.HasDisplay {
		t.Fatalf("after reconnect hello (no display): %+v", l)
	}
	if got, _ := e.store.GetEnrollment(ctx, testWS, en.ID); got.HasDisplay {
		t.Fatal("hello without desktop or display kept hasDisplay")
	}
	step(base+".hello", hello(testWS, en.ID, true, nil))
	if got, _ := e.store.GetEnrollment(ctx, testWS, en.ID); !got.HasDisplay {
		t.Fatal("hello with desktop=true did not set hasDisplay")
	}

	// Revoked enrollments are still ingested; liveness says offline.
	if _, err := e.store.RevokeEnrollment(ctx, testWS, en.ID); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	step(base+".events", heartbeat(en.ID, 4, &agentpb.MetricsSample{}))
	if m, _ := e.store.GetMachine(ctx, testWS, en.ID); !m.LastSeenAt.Equal(e.clock.Now()) {
		t.Fatal("revoked enrollment's heartbeat not ingested")
	}
	if l := live(true); l.State != control.StateOffline {
		t.Fatalf("revoked: %+v", l)
	}

	// Unknown enrollments, malformed subjects and payloads are no-ops.
	step("agent."+testWS+".unknown-agent.events", heartbeat("unknown-agent", 1, &agentpb.MetricsSample{}))
	step("agent."+testWS+".unknown-agent.hello", hello(testWS, "unknown-agent", true, nil))
	if _, err := e.store.GetMachine(ctx, testWS, "unknown-agent"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown enrollment created a machine: %v", err)
	}
	if err := e.nc.Publish(base+".events", []byte{0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	n++
	waitHandled(t, in, n)
	if in.Failed() == 0 {
		t.Fatal("garbage payload did not count as failed")
	}
	for _, subj := range []string{"agent.x.events", "agent.a.b.c.events", "agent.a.b.rpc", "agents.a.b.events",
		"agent.a.b.connection.events", "agent.a.b.connection..events", "agent.a.b.conn.i.events", "agent.a.b.connection.i.rpc"} {
		if err := e.store.HandleMessage(ctx, subj, nil); err == nil {
			t.Errorf("%q accepted", subj)
		}
	}
}

func TestMetricsSeriesDownsampled(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.SeriesRetention = 5 * time.Minute })
	ctx := ctxT(t)
	en := e.enroll(t, "pk")
	// sampled_at 0 → now. Offsets in seconds: a point is kept only ≥ 60 s
	// after the last kept one; retention 5 min keeps at most 5 points.
	var kept []time.Time
	start := e.clock.Now()
	for _, off := range []int{0, 30, 59, 60, 61, 119, 120, 200, 300, 360, 420, 480} {
		e.clock.Set(start.Add(time.Duration(off) * time.Second))
		if err := e.store.ApplyHeartbeat(ctx, testWS, en.ID, &agentpb.Heartbeat{Metrics: &agentpb.MetricsSample{CpuPercent: float64(off)}}); err != nil {
			t.Fatal(err)
		}
	}
	pts, err := e.store.MetricsSeries(ctx, testWS, en.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pts {
		kept = append(kept, p.SampledAt)
	}
	var offs []int
	for _, k := range kept {
		offs = append(offs, int(k.Sub(start)/time.Second))
	}
	// All kept: 0, 60, 120, 200, 300, 360, 420, 480; retention (5 min before
	// 480 = 180, exclusive) and the 5-point bound leave 200..480.
	want := []int{200, 300, 360, 420, 480}
	if fmt.Sprint(offs) != fmt.Sprint(want) {
		t.Fatalf("series offsets %v, want %v", offs, want)
	}
	m, _ := e.store.GetMachine(ctx, testWS, en.ID)
	if m.LatestMetrics.CPUPercent != 480 {
		t.Fatalf("latest %+v", m.LatestMetrics)
	}
	// A second store on the same buckets (another replica) continues the series.
	s2, err := New(ctx, e.js, Options{Now: e.clock.Now, SeriesRetention: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(60 * time.Second)
	if err := s2.ApplyHeartbeat(ctx, testWS, en.ID, &agentpb.Heartbeat{Metrics: &agentpb.MetricsSample{CpuPercent: 540}}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(60 * time.Second)
	// The first store's cache is stale; compare-and-set reloads it.
	if err := e.store.ApplyHeartbeat(ctx, testWS, en.ID, &agentpb.Heartbeat{Metrics: &agentpb.MetricsSample{CpuPercent: 600}}); err != nil {
		t.Fatal(err)
	}
	pts, _ = e.store.MetricsSeries(ctx, testWS, en.ID)
	if len(pts) != 5 || pts[3].CPUPercent != 540 || pts[4].CPUPercent != 600 {
		t.Fatalf("multi-writer series: %+v", pts)
	}
}

func TestWatchEnrollments(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()
	en := e.enroll(t, "pk")
	got := make(chan Enrollment, 16)
	if err := e.store.WatchEnrollments(ctx, func(x Enrollment) { got <- x }); err != nil {
		t.Fatal(err)
	}
	if x := <-got; x.ID != en.ID || !x.Active() {
		t.Fatalf("initial %+v", x)
	}
	if _, err := e.store.RevokeEnrollment(ctx, testWS, en.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case x := <-got:
		if x.Status != "revoked" {
			t.Fatalf("update %+v", x)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no revocation seen")
	}
}

// The exported bucket and key helpers (for the relay's revocation watch)
// name what the store writes.
func TestEnrollmentsBucketAndKeys(t *testing.T) {
	ns := natstest.Start(t, natstest.JetStream(t.TempDir()))
	js, err := jetstream.New(natstest.Connect(t, ns))
	if err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"", "other"} {
		s, err := New(context.Background(), js, Options{Prefix: prefix})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Enrollments().Bucket(); got != EnrollmentsBucket(prefix) {
			t.Fatalf("bucket %q, want %q", got, EnrollmentsBucket(prefix))
		}
		e, err := s.UpsertEnrollment(context.Background(), FinalizeInput{WorkspaceID: "ws-1", Pubkey: "pk"})
		if err != nil {
			t.Fatal(err)
		}
		lister, err := s.Enrollments().ListKeysFiltered(context.Background(), EnrollmentKeys)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for k := range lister.Keys() {
			ws, id, ok := ParseEnrollmentKey(k)
			if !ok || ws != "ws-1" || id != e.ID {
				t.Fatalf("key %q parsed as %q %q %v", k, ws, id, ok)
			}
			n++
		}
		if n != 1 {
			t.Fatalf("%d enrollment keys", n)
		}
	}
	for _, bad := range []string{"p.ws.x", "e.ws", "e..id", "e.ws.a.b", "e.ws.a b"} {
		if _, _, ok := ParseEnrollmentKey(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}
