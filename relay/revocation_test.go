package relay

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/revocation"
)

// revocationNATS is a real nats-server with JetStream and the two users of
// a deployment: "admin" (the control plane: writes the enrollments bucket)
// and "relay" with exactly revocation.NATSPermissions.
func revocationNATS(t testing.TB, extra ...natstest.Option) *server.Server {
	pub, sub := revocation.NATSPermissions(store.EnrollmentsBucket(""))
	q := func(ss []string) string {
		out := make([]string, len(ss))
		for i, s := range ss {
			out[i] = fmt.Sprintf("%q", s)
		}
		return strings.Join(out, ", ")
	}
	conf := fmt.Sprintf(`accounts { APP { jetstream: enabled, users: [
  {user: admin, password: admin}
  {user: relay, password: relay, permissions: { publish: { allow: [%s] }, subscribe: { allow: [%s] } } }
] } }`, q(pub), q(sub))
	opts := append([]natstest.Option{func(o *server.Options) {
		if err := o.ProcessConfigString(conf); err != nil {
			t.Fatalf("nats config: %v", err)
		}
	}, natstest.JetStream(t.TempDir())}, extra...)
	return natstest.Start(t, opts...)
}

// violations collects the relay connection's async errors (permission
// violations are reported there).
type violations struct {
	mu   sync.Mutex
	errs []error
	wake chan struct{}
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

func (v *violations) all() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]error(nil), v.errs...)
}

// await waits for a violation mentioning subject.
func (v *violations) await(t *testing.T, subject string) bool {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		for _, err := range v.all() {
			if strings.Contains(err.Error(), subject) {
				return true
			}
		}
		select {
		case <-v.wake:
		case <-deadline.C:
			return false
		}
	}
}

func relayNATSConn(t testing.TB, ns *server.Server, v *violations, opts ...nats.Option) *nats.Conn {
	return natstest.Connect(t, ns, append([]nats.Option{nats.UserInfo("relay", "relay"),
		nats.CustomInboxPrefix(revocation.InboxPrefix), nats.ErrorHandler(v.handler)}, opts...)...)
}

func enrollMachine(t testing.TB, st *store.Store, ws, pubkey string) string {
	e, err := st.UpsertEnrollment(context.Background(), store.FinalizeInput{WorkspaceID: ws, Pubkey: pubkey, OS: "linux", Arch: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	return e.ID
}

// A revoked machine's ogr_ token is refused and its live channels (agent
// and viewers) are closed within the watch latency; another machine is
// untouched. The relay's NATS user holds only the watch's permissions, and
// the watch never trips them.
func TestAttackRevokedRelayToken(t *testing.T) {
	ns := revocationNATS(t)
	admin := natstest.Connect(t, ns, nats.UserInfo("admin", "admin"))
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.New(context.Background(), js, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const ws = testWS
	machineA, machineB := enrollMachine(t, st, ws, "pk-a"), enrollMachine(t, st, ws, "pk-b")
	machineC := enrollMachine(t, st, ws, "pk-c")

	v := &violations{wake: make(chan struct{}, 1)}
	w := revocation.Start(relayNATSConn(t, ns, v), revocation.Options{})
	t.Cleanup(w.Close)
	e := newEnv(t, func(o *Options) { o.Revocations = w })
	<-w.Synced()

	const port = 7681
	agentA := e.mustConnect(machineQuery(ws, machineA, port), machineAgentOpen(t, testSecret, ws, machineA, port))
	agentA2 := e.mustConnect(machineQuery(ws, machineA, 6080), machineAgentOpen(t, testSecret, ws, machineA, 6080))
	viewerA := e.mustConnect(machineQuery(ws, machineA, port), machineViewerOpen(t, testSecret, ws, machineA, machineA, port))
	viewerA2 := e.mustConnect(machineQuery(ws, machineA, port), machineViewerOpen(t, testSecret, ws, machineA, "", port))
	agentB := e.mustConnect(machineQuery(ws, machineB, port), machineAgentOpen(t, testSecret, ws, machineB, port))
	viewerB := e.mustConnect(machineQuery(ws, machineB, port), machineViewerOpen(t, testSecret, ws, machineB, machineB, port))
	agentA.send("before")
	viewerA.nextFrame()
	viewerA2.nextFrame()

	revokedAt := time.Now()
	if ok, err := st.RevokeEnrollment(context.Background(), ws, machineA); !ok || err != nil {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	// Synchronise on the closes: every live side of A is told and dropped.
	for name, p := range map[string]*peer{"agent": agentA, "agent (2nd channel)": agentA2, "scoped viewer": viewerA, "unscoped viewer": viewerA2} {
		c := p.nextClose()
		if c.GetReason() != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_FENCED || c.GetMessage() != msgRevoked {
			t.Fatalf("%s close %v", name, c)
		}
		p.expectEnd()
	}
	t.Logf("revoked machine's channels closed %v after the revoke", time.Since(revokedAt))
	// B is untouched.
	agentB.send("still here")
	if f := viewerB.nextFrame(); string(f.GetData()) != "still here" {
		t.Fatalf("B's viewer got %q", f.GetData())
	}

	// Deleting a record counts as a revocation too.
	kv, err := js.KeyValue(context.Background(), store.EnrollmentsBucket(""))
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(context.Background(), "e."+ws+"."+machineC); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, waitFor, func() error {
		if r, _ := w.Revoked(ws, machineC); !r {
			return errors.New("deleted record not seen")
		}
		return nil
	})

	attempts, refused := 0, 0
	try := func(query string, open *agentpb.StreamOpen) {
		attempts++
		if e.refusedOpen(query, open, msgRevoked) {
			refused++
		}
	}
	for _, m := range []string{machineA, machineC} {
		for _, p := range []uint32{port, 6080, 5900, 20001} {
			try(machineQuery(ws, m, p), machineAgentOpen(t, testSecret, ws, m, p))
			try(machineQuery(ws, m, p)+fmt.Sprintf("&channel=ch-%d", p), machineAgentOpen(t, testSecret, ws, m, p))
			try(machineQuery(ws, m, p), machineViewerOpen(t, testSecret, ws, m, m, p))
		}
	}
	attackLog(t, "relay-revoked-token", attempts, refused)

	// Re-enrolling the same machine (same key) re-activates it with a new
	// credential generation: tokens minted before the revocation (the
	// attacker kept a copy) stay dead; one of the new generation opens.
	reactivated, err := st.UpsertEnrollment(context.Background(), store.FinalizeInput{WorkspaceID: ws, Pubkey: "pk-a", OS: "linux", Arch: "x86_64"})
	if err != nil || reactivated.ID != machineA || reactivated.Generation() < 2 {
		t.Fatalf("re-activation: %+v %v", reactivated, err)
	}
	natstest.Eventually(t, waitFor, func() error {
		if r, err := w.Revoked(ws, machineA); r || err != nil {
			return fmt.Errorf("still revoked: %v", err)
		}
		if g := w.CredentialGeneration(ws, machineA); g != reactivated.Generation() {
			return fmt.Errorf("generation %d, want %d", g, reactivated.Generation())
		}
		return nil
	})
	attempts, refused = 0, 0
	for _, p := range []uint32{port, 6080} {
		try := func(open *agentpb.StreamOpen) {
			attempts++
			if e.refusedOpen(machineQuery(ws, machineA, p), open, msgStaleGeneration) {
				refused++
			}
		}
		try(machineAgentOpen(t, testSecret, ws, machineA, p)) // generation absent: 1
		try(machineAgentOpenGen(t, testSecret, ws, machineA, p, reactivated.Generation()-1))
	}
	attackLog(t, "relay-token-before-reactivation", attempts, refused)
	e.mustConnect(machineQuery(ws, machineA, port), machineAgentOpenGen(t, testSecret, ws, machineA, port, reactivated.Generation()))

	w.Close()
	if errs := v.all(); len(errs) > 0 {
		t.Fatalf("the watch tripped the relay user's permissions: %v", errs)
	}
}

// The relay's NATS user reaches the enrollments watch and nothing else.
func TestAttackRelayNATSUserOverreach(t *testing.T) {
	ns := revocationNATS(t)
	admin := natstest.Connect(t, ns, nats.UserInfo("admin", "admin"))
	js, _ := jetstream.New(admin)
	if _, err := store.New(context.Background(), js, store.Options{}); err != nil {
		t.Fatal(err)
	}
	v := &violations{wake: make(chan struct{}, 1)}
	nc := relayNATSConn(t, ns, v)
	bucket := store.EnrollmentsBucket("")
	pubs := []string{
		"$JS.API.STREAM.LIST",
		"$JS.API.STREAM.INFO.KV_opengeni_devices",
		"$JS.API.DIRECT.GET.KV_" + bucket,
		"$JS.API.STREAM.MSG.GET.KV_" + bucket,
		"$JS.API.STREAM.DELETE.KV_" + bucket,
		"$JS.API.CONSUMER.CREATE.KV_opengeni_devices.x",
		"$KV." + bucket + ".e.ws.agent",
		"agent.ws.agent.rpc",
		"_INBOX.anything",
		"$SYS.REQ.SERVER.PING",
	}
	subs := []string{"agent.>", "_INBOX.>", "$KV.>", ">", "$JS.API.>"}
	attempts, refused := 0, 0
	for _, s := range pubs {
		attempts++
		if err := nc.Publish(s, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		if v.await(t, s) {
			refused++
		}
	}
	for _, s := range subs {
		attempts++
		if _, err := nc.SubscribeSync(s); err != nil {
			t.Fatal(err)
		}
		if v.await(t, s) {
			refused++
		}
	}
	attackLog(t, "relay-nats-user-overreach", attempts, refused)
}

// Fail closed: until the watch has synced, and while NATS is down, agents
// are refused (retryably); viewers are not, and live channels stay.
func TestRevocationFailsClosed(t *testing.T) {
	ns := natstest.Run(t, natstest.JetStream(t.TempDir()))
	nc := natstest.Connect(t, ns, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	w := revocation.Start(nc, revocation.Options{})
	t.Cleanup(w.Close)
	e := newEnv(t, func(o *Options) { o.Revocations = w })

	// No bucket yet: never synced.
	p, ack := e.connect(keyQuery(7681), agentOpen(t, 7681, 0))
	if ack.GetAccepted() || ack.GetError().GetMessage() != msgRevocationUnknown || !ack.GetError().GetRetryable() {
		t.Fatalf("unsynced: ack %v", ack)
	}
	p.expectEnd()
	viewer := e.mustConnect(keyQuery(7681), viewerOpen(t, viewerClaims(0, 7681), 0))

	js, _ := jetstream.New(nc)
	if _, err := store.New(context.Background(), js, store.Options{}); err != nil {
		t.Fatal(err)
	}
	<-w.Synced()
	agent := e.mustConnect(keyQuery(7681), agentOpen(t, 7681, 0))

	// NATS goes away: new agents are refused, the live channel keeps working.
	ns.Shutdown()
	natstest.Eventually(t, waitFor, func() error {
		if _, err := w.Revoked(testWS, testAgent); !errors.Is(err, revocation.ErrUnavailable) {
			return fmt.Errorf("still available: %v", err)
		}
		return nil
	})
	p, ack = e.connect(keyQuery(6080), agentOpen(t, 6080, 0))
	if ack.GetAccepted() || ack.GetError().GetMessage() != msgRevocationUnknown {
		t.Fatalf("NATS down: ack %v", ack)
	}
	p.expectEnd()
	agent.send("through the outage")
	if f := viewer.nextFrame(); string(f.GetData()) != "through the outage" {
		t.Fatalf("got %q", f.GetData())
	}
}

// A replay large enough for JetStream flow control completes under the
// relay user's permissions (without $JS.FC the consumer stalls: the watch
// never syncs and every agent is refused).
func TestRevocationLargeReplayFlowControl(t *testing.T) {
	ns := revocationNATS(t)
	admin := natstest.Connect(t, ns, nats.UserInfo("admin", "admin"))
	js, _ := jetstream.New(admin)
	if _, err := store.New(context.Background(), js, store.Options{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), store.EnrollmentsBucket(""))
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 60000)
	const n = 300
	for i := range n {
		if _, err := kv.Put(context.Background(), fmt.Sprintf("e.ws.id%d", i), []byte(`{"status":"revoked","pad":"`+pad+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	v := &violations{wake: make(chan struct{}, 1)}
	w := revocation.Start(relayNATSConn(t, ns, v), revocation.Options{})
	t.Cleanup(w.Close)
	select {
	case <-w.Synced():
	case <-time.After(waitFor):
		t.Fatalf("the watch did not sync a %d-record replay; violations: %v", n, v.all())
	}
	if r, err := w.Revoked("ws", fmt.Sprintf("id%d", n-1)); !r || err != nil {
		t.Fatalf("last record: %v %v", r, err)
	}
	if errs := v.all(); len(errs) > 0 {
		t.Fatalf("violations: %v", errs)
	}
}
