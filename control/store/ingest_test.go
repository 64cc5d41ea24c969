package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// enrollMachines creates n enrollments and returns their ids.
func (e *env) enrollMachines(t testing.TB, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		en, err := e.store.UpsertEnrollment(ctxT(t), FinalizeInput{WorkspaceID: testWS, Pubkey: fmt.Sprintf("pk-%d", i), OS: "linux"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = en.ID
	}
	return ids
}

// Many machines' Hello and heartbeats published as fast as one connection
// can (one machine's back to back, the next machine's right after, so the
// workers overlap), carried on both subjects as the agent does: every message is handled (none dropped), and each machine's
// record ends with its Hello and its latest heartbeat, so the workers kept
// every machine's messages in arrival order.
func TestIngestKeepsEachMachinesOrder(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	const machines, beats = 48, 25
	ids := e.enrollMachines(t, machines)
	in, err := e.store.IngestWith(e.nc, IngestOptions{Workers: 8, WorkerQueue: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.Close)
	inst := func(i int) string { return fmt.Sprintf("%08d-1111-4111-8111-111111111111", i) }
	subj := func(i int, tail string) []string {
		v1 := "agent." + testWS + "." + ids[i] + "."
		return []string{v1 + tail, v1 + "connection." + inst(i) + "." + tail}
	}
	sent := uint64(0)
	for i := range ids {
		for _, s := range subj(i, "hello") {
			publish(t, e.nc, s, hello(testWS, ids[i], false, nil))
			sent++
		}
		for seq := uint64(1); seq <= beats; seq++ {
			for _, s := range subj(i, "events") {
				publish(t, e.nc, s, heartbeat(ids[i], seq, &agentpb.MetricsSample{CpuPercent: float64(seq)}))
				sent++
			}
		}
	}
	waitHandled(t, in, sent)
	if in.Failed() != 0 || in.Dropped() != 0 {
		t.Fatalf("failed %d, dropped %d of %d", in.Failed(), in.Dropped(), sent)
	}
	for i, id := range ids {
		m, err := e.store.GetMachine(ctx, testWS, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.HelloAt == nil || m.Heartbeat == nil || m.Heartbeat.Seq != beats || m.LatestMetrics == nil || m.LatestMetrics.CPUPercent != beats {
			t.Fatalf("machine %d: hello %v, heartbeat %+v, metrics %+v; want the Hello and heartbeat %d", i, m.HelloAt, m.Heartbeat, m.LatestMetrics, beats)
		}
		if m.Instance != inst(i) {
			t.Fatalf("machine %d: instance %q", i, m.Instance)
		}
	}
	if got, want := in.Duplicates(), uint64(machines*(1+beats)); got != want {
		t.Fatalf("duplicates %d, want %d (one per Hello and heartbeat)", got, want)
	}
}

// The agent sends every heartbeat on the v1 and the connection-instance
// subject. The machine record is written once per heartbeat (counted on a
// watch of its key), whichever copy comes first, and the instance copy
// renews the connection lease even when it comes second.
func TestIngestAppliesHeartbeatCopiesOnce(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	id := e.enrollMachines(t, 1)[0]
	in := e.ingest(t)
	w, err := e.store.machines.Watch(ctx, machineKey(testWS, id), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()

	inst, other := "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
	v1 := "agent." + testWS + "." + id + ".events"
	conn := "agent." + testWS + "." + id + ".connection." + inst + ".events"
	if err := e.store.ClaimConnection(ctx, testWS, id, inst); err != nil {
		t.Fatal(err)
	}
	n := uint64(0)
	const beats = 6
	for seq := uint64(1); seq <= beats; seq++ {
		// Past the lease's TTL over the loop: only renewals keep it.
		e.clock.Advance(ConnectionLeaseTTL / 2)
		// The instance copy second in the first half: its renewal alone
		// keeps the lease.
		first, second := v1, conn
		if seq > beats/2 {
			first, second = conn, v1
		}
		for _, s := range []string{first, second} {
			publish(t, e.nc, s, heartbeat(id, seq, &agentpb.MetricsSample{}))
			n++
		}
		waitHandled(t, in, n)
		if err := e.store.ClaimConnection(ctx, testWS, id, other); !errors.Is(err, ErrLeaseHeld) {
			t.Fatalf("heartbeat %d: another instance claimed the lease: %v", seq, err)
		}
	}
	// A repeated v1 heartbeat with the same numbers is not a second copy
	// (it came on the same subject): applied.
	publish(t, e.nc, v1, heartbeat(id, beats, &agentpb.MetricsSample{}))
	publish(t, e.nc, v1, heartbeat(id, beats, &agentpb.MetricsSample{}))
	// GoingOffline marks the end of the writes on the watch.
	publish(t, e.nc, v1, &agentpb.AgentEvent{Event: &agentpb.AgentEvent_GoingOffline{GoingOffline: &agentpb.GoingOffline{}}})
	n += 3
	waitHandled(t, in, n)
	if in.Failed() != 0 {
		t.Fatalf("%d failed", in.Failed())
	}
	if in.Duplicates() != beats {
		t.Fatalf("duplicates %d, want %d", in.Duplicates(), beats)
	}
	writes := map[uint64]int{}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case u := <-w.Updates():
			if u == nil {
				continue
			}
			m, err := decodeMachine(u)
			if err != nil {
				t.Fatal(err)
			}
			if m.WentOfflineAt != nil {
				for seq := uint64(1); seq < beats; seq++ {
					if writes[seq] != 1 {
						t.Fatalf("heartbeat %d written %d times: %v", seq, writes[seq], writes)
					}
				}
				if writes[beats] != 3 {
					t.Fatalf("heartbeat %d (both copies, then twice on v1) written %d times, want 3", beats, writes[beats])
				}
				return
			}
			if m.Heartbeat != nil {
				writes[m.Heartbeat.Seq]++
			}
		case <-timeout:
			t.Fatalf("no GoingOffline write on the watch; writes so far %v", writes)
		}
	}
}

func decodeMachine(u jetstream.KeyValueEntry) (Machine, error) {
	var m Machine
	err := json.Unmarshal(u.Value(), &m)
	return m, err
}

// Dedupe state stays bounded: past its cap an arbitrary machine is
// forgotten; GoingOffline forgets its machine. Only the other subject's copy
// of the same kind of message is a second copy.
func TestCopyDedupeBounded(t *testing.T) {
	d := newCopyDedupe(3)
	for i := range 10 {
		d.applied(fmt.Sprint(i), copyID{a: 1})
		if len(d.last) > 3 {
			t.Fatalf("%d entries after %d machines", len(d.last), i+1)
		}
	}
	d.applied("m", copyID{a: 7, b: 9})
	if d.second("m", copyID{a: 7, b: 9}) {
		t.Fatal("the same subject's copy taken for the other's")
	}
	if !d.second("m", copyID{a: 7, b: 9, instance: true}) {
		t.Fatal("the instance copy not recognised")
	}
	if d.second("m", copyID{a: 7, b: 9, instance: true}) {
		t.Fatal("a third copy recognised")
	}
	hello := helloCopy([]byte("hello"), false)
	d.applied("m", hello)
	if d.second("m", copyID{a: hello.a, instance: true}) {
		t.Fatal("a heartbeat taken for a Hello's copy")
	}
	if !d.second("m", helloCopy([]byte("hello"), true)) {
		t.Fatal("the Hello's instance copy not recognised")
	}
	d.applied("m", copyID{a: 8})
	d.forget("m")
	if d.second("m", copyID{a: 8, instance: true}) {
		t.Fatal("forgotten machine still deduplicated")
	}
}

func TestSubjectMachine(t *testing.T) {
	for _, c := range []struct{ subject, want string }{
		{"agent.ws.id.events", "ws.id"},
		{"agent.ws.id.connection.inst.hello", "ws.id"},
		{"agent.ws", "agent.ws"},
		{"other.ws.id.events", "other.ws.id.events"},
	} {
		if got := subjectMachine(c.subject); got != c.want {
			t.Errorf("subjectMachine(%q) = %q, want %q", c.subject, got, c.want)
		}
	}
}
