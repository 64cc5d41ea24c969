package devstack

// The adversarial suite of docs/security.md: two workspaces with two paired
// machines each, over the real stack (embedded nats-server with the auth
// callout, JetStream store, enrollment API, real agents). The attacker holds
// machine A1's own bearer and tries to reach anything but A1. Every attempt
// must be refused; the counts are printed as
// "ATTACK class=<name> attempts=<n> refused=<m>".
//
// "Refused" is judged by effect, not by error messages: a victim observer
// (a second connection with the victim's own bearer, subscribed to its rpc
// subject) must see nothing, a request must get no answer, the store must be
// unchanged. Ordering is by PING/PONG round trips (Flush), never sleeps: once
// the attacker's Flush returns the server has routed its messages, and once
// an observer's Flush returns, anything routed to it is in its pending queue.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// tally counts attempts and refusals per attack class.
type tally struct {
	mu      sync.Mutex
	classes map[string]*[2]int
	t       *testing.T
}

func newTally(t *testing.T) *tally { return &tally{classes: map[string]*[2]int{}, t: t} }

// attempt records one attempt of class; refused says whether it was held.
func (ta *tally) attempt(class string, refused bool, what string, args ...any) {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	c := ta.classes[class]
	if c == nil {
		c = &[2]int{}
		ta.classes[class] = c
	}
	c[0]++
	if refused {
		c[1]++
	} else {
		ta.t.Errorf("ATTACK GOT THROUGH [%s]: "+what, append([]any{class}, args...)...)
	}
}

func (ta *tally) report() {
	ta.mu.Lock()
	defer ta.mu.Unlock()
	names := make([]string, 0, len(ta.classes))
	for n := range ta.classes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c := ta.classes[n]
		ta.t.Logf("ATTACK class=%s attempts=%d refused=%d", n, c[0], c[1])
	}
}

type machine struct {
	creds      *config.Credentials
	deviceCode string
}

func (m *machine) rpc() string { return subject.Of(m.creds.WorkspaceID, m.creds.AgentID, subject.RPC) }

// pair runs the real device flow for a fresh identity in ws.
func pair(t *testing.T, p *Platform, ws string) *machine {
	t.Helper()
	ctx := t.Context()
	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	client := &agentenroll.Client{BaseURL: p.APIURL(), UserAgent: "attack-suite",
		Sleep: func(context.Context, time.Duration) error { return nil }}
	start, err := client.Start(ctx, agentenroll.StartRequest{WorkspaceID: ws, PublicKey: id.PublicKey(), OS: "linux", Arch: "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Admin().Do(ctx, http.MethodPost, "/v1/workspaces/"+ws+"/enrollments/device/approve",
		map[string]any{"userCode": start.UserCode}, nil); err != nil {
		t.Fatal(err)
	}
	wire, err := client.Poll(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	return &machine{creds: agentenroll.StoredCredentials(wire, p.APIURL(), ""), deviceCode: start.DeviceCode}
}

// agentNATS connects with a machine's own bearer, as its agent would.
func agentNATS(t *testing.T, p *Platform, m *machine, onErr func(error)) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(p.NATSURL(), nats.Token(m.creds.NATSBearer), nats.NoReconnect(), nats.Timeout(5*time.Second),
		nats.CustomInboxPrefix(subject.AgentInboxPrefix(m.creds.WorkspaceID, m.creds.AgentID)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if onErr != nil {
				onErr(err)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// observer is a victim's own second connection subscribed to its rpc.
type observer struct {
	nc  *nats.Conn
	sub *nats.Subscription
}

func observe(t *testing.T, p *Platform, m *machine) *observer {
	t.Helper()
	nc := agentNATS(t, p, m, nil)
	sub, err := nc.SubscribeSync(m.rpc())
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &observer{nc: nc, sub: sub}
}

// delivered returns how many messages reached the observer since the last
// call, after a round trip that makes anything routed to it visible.
func (o *observer) delivered(t *testing.T) int {
	t.Helper()
	if err := o.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := o.sub.NextMsg(0); err != nil {
			return n
		}
		n++
	}
}

func execRequest(t *testing.T, argv ...string) []byte {
	t.Helper()
	b, err := proto.Marshal(&agentpb.ControlRequest{RequestId: uuid.NewString(),
		Op: &agentpb.ControlRequest_Exec{Exec: &agentpb.ExecRequest{Command: argv}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noAnswer sends a request and reports whether nothing answered it.
func noAnswer(nc *nats.Conn, subj string, data []byte) bool {
	_, err := nc.Request(subj, data, 250*time.Millisecond)
	return err != nil
}

func TestAttackSuite(t *testing.T) {
	p := startPlatform(t, t.TempDir(), nil)
	ctx := t.Context()
	wsA, wsB := uuid.NewString(), uuid.NewString()
	a1, a2 := pair(t, p, wsA), pair(t, p, wsA)
	b1, b2 := pair(t, p, wsB), pair(t, p, wsB)
	for _, m := range []*machine{a2, b1, b2} {
		runAgent(t, m.creds)
	}
	ctl, err := p.ControlConn()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	js, err := jetstream.New(ctl)
	if err != nil {
		t.Fatal(err)
	}
	// Every victim answers the control plane before the attack starts.
	for _, m := range []*machine{a2, b1, b2} {
		sess := session(t, p.ControlConnFactory(), m.creds)
		natstest.Eventually(t, 10*time.Second, func() error {
			if !sess.Ping(ctx) {
				return fmt.Errorf("control → %s: no answer", m.creds.AgentID)
			}
			return nil
		})
	}

	ta := newTally(t)
	defer ta.report()
	attacker := agentNATS(t, p, a1, nil)
	victims := map[string]*observer{"B1": observe(t, p, b1), "B2": observe(t, p, b2), "A2": observe(t, p, a2)}
	victimRPC := map[string]string{"B1": b1.rpc(), "B2": b2.rpc(), "A2": a2.rpc()}
	flush := func() {
		if err := attacker.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	deliveredAnywhere := func() int {
		n := 0
		for _, o := range victims {
			n += o.delivered(t)
		}
		return n
	}

	// 1. The self-addressed reply trick: the attacker sends a message with a
	// reply subject of its choosing (another machine's rpc, the JetStream
	// API) to a subject it might also receive, answers it, and would thereby
	// publish through allow-responses. Carriers: everything it may
	// subscribe or publish.
	own := func(suffix string) string { return subject.Of(wsA, a1.creds.AgentID, suffix) }
	carriers := []string{own(subject.RPC), own(subject.Events), own(subject.Hello),
		subject.AgentInboxPrefix(wsA, a1.creds.AgentID) + ".trick",
		subject.Connection(wsA, a1.creds.AgentID, uuid.NewString()) + ".rpc"}
	targets := []string{victimRPC["B1"], victimRPC["B2"], victimRPC["A2"], "$JS.API.STREAM.CREATE.EVIL", "$KV.opengeni_enrollments.e." + wsB + "." + b1.creds.AgentID}
	evil := execRequest(t, "id")
	for _, carrier := range carriers {
		sub, err := attacker.Subscribe(carrier, func(m *nats.Msg) {
			if m.Reply != "" {
				_ = m.Respond(evil) // the forwarded publish the trick is after
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range targets {
			_ = attacker.PublishMsg(&nats.Msg{Subject: carrier, Reply: target, Data: []byte("x")})
			flush()
			flush() // the handler's Respond, if any, went out before this round trip
			got := deliveredAnywhere()
			_, serr := js.Stream(ctx, "EVIL")
			held := got == 0 && errors.Is(serr, jetstream.ErrStreamNotFound)
			ta.attempt("reply-trick", held, "carrier %s reply %s: %d deliveries, stream EVIL err %v", carrier, target, got, serr)
		}
		_ = sub.Unsubscribe()
	}
	// The control plane receives hellos and events with any reply subject:
	// it must never answer them (it may publish to machines' rpc).
	for i, target := range []string{victimRPC["B1"], victimRPC["A2"]} {
		ev, _ := proto.Marshal(&agentpb.AgentEvent{AgentId: a1.creds.AgentID, Event: &agentpb.AgentEvent_Heartbeat{Heartbeat: &agentpb.Heartbeat{Seq: 1, Metrics: &agentpb.MetricsSample{}}}})
		_ = attacker.PublishMsg(&nats.Msg{Subject: own(subject.Events), Reply: target, Data: ev})
		marker := fmt.Sprintf("attack-%d", i)
		hello, _ := proto.Marshal(&agentpb.Hello{AgentId: a1.creds.AgentID, AgentVersion: marker})
		_ = attacker.PublishMsg(&nats.Msg{Subject: own(subject.Hello), Reply: target, Data: hello})
		flush()
		// The ingestion is serial: once the hello is stored, both were handled.
		natstest.Eventually(t, 10*time.Second, func() error {
			m, err := p.Store().GetMachine(ctx, wsA, a1.creds.AgentID)
			if err != nil || m.AgentVersion != marker {
				return fmt.Errorf("hello not ingested yet: %v %v", m.AgentVersion, err)
			}
			return nil
		})
		if err := p.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
		got := deliveredAnywhere()
		ta.attempt("reply-trick-via-control", got == 0, "control plane answered an agent's message toward %s (%d deliveries)", target, got)
	}

	// 2. Direct publish and request to other machines (foreign workspace and
	// sibling), and subscriptions to their subjects.
	for name, subj := range victimRPC {
		class := "foreign-direct"
		if strings.HasPrefix(name, "A") {
			class = "sibling-direct"
		}
		_ = attacker.Publish(subj, evil)
		flush()
		ta.attempt(class, deliveredAnywhere() == 0, "publish to %s reached it", name)
		ok := noAnswer(attacker, subj, evil)
		ta.attempt(class, ok && deliveredAnywhere() == 0, "request to %s answered or delivered", name)
	}
	wild := []string{"agent." + wsB + ".>", "agent." + wsB + "." + b1.creds.AgentID + ".rpc", "agent." + wsA + ".*.rpc",
		victimRPC["A2"], "agent." + wsA + ".>", "agent.*.*.rpc", "agent.>", ">", "agent." + wsA + "." + a2.creds.AgentID + ".connection.*.rpc"}
	var snoopMu sync.Mutex
	snooped := map[string]int{}
	for _, w := range wild {
		if _, err := attacker.Subscribe(w, func(m *nats.Msg) { snoopMu.Lock(); snooped[w]++; snoopMu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	for _, m := range []*machine{a2, b1} {
		if !session(t, p.ControlConnFactory(), m.creds).Ping(ctx) {
			t.Fatal(err)
		}
	}
	flush()
	for _, w := range wild {
		snoopMu.Lock()
		n := snooped[w]
		snoopMu.Unlock()
		class := "foreign-subscribe"
		if strings.Contains(w, wsA) {
			class = "sibling-subscribe"
		} else if !strings.Contains(w, wsB) {
			class = "wildcard-subscribe"
		}
		ta.attempt(class, n == 0, "subscription %s read %d control requests", w, n)
	}
	deliveredAnywhere() // the control pings above

	// 3. The JetStream API, the KV store, the system account.
	for _, subj := range []string{"$JS.API.INFO", "$JS.API.STREAM.LIST", "$JS.API.STREAM.NAMES",
		"$JS.API.STREAM.INFO.KV_opengeni_enrollments", "$JS.API.STREAM.MSG.GET.KV_opengeni_enrollments",
		"$JS.API.DIRECT.GET.KV_opengeni_devices", "$JS.API.STREAM.CREATE.EVIL", "$JS.API.STREAM.DELETE.KV_opengeni_devices",
		"$JS.API.CONSUMER.CREATE.KV_opengeni_enrollments"} {
		ta.attempt("jetstream-api", noAnswer(attacker, subj, []byte(`{"seq":1}`)), "%s answered", subj)
	}
	if _, err := js.Stream(ctx, "KV_opengeni_devices"); err != nil {
		t.Errorf("devices bucket damaged: %v", err)
	}
	before, err := p.Store().GetEnrollment(ctx, wsB, b1.creds.AgentID)
	if err != nil {
		t.Fatal(err)
	}
	_ = attacker.Publish("$KV.opengeni_enrollments.e."+wsB+"."+b1.creds.AgentID, []byte(`{"status":"revoked"}`))
	flush()
	after, err := p.Store().GetEnrollment(ctx, wsB, b1.creds.AgentID)
	ta.attempt("kv", err == nil && after.Status == before.Status && after.UpdatedAt.Equal(before.UpdatedAt), "B1's enrollment rewritten: %+v %v", after, err)
	kvSub, err := attacker.SubscribeSync("$KV.>")
	if err != nil {
		t.Fatal(err)
	}
	flush()
	// Heartbeats keep writing $KV.opengeni_machines.*: wait for a new one.
	seen := func() time.Time {
		m, _ := p.Store().GetMachine(ctx, wsB, b1.creds.AgentID)
		if m.LastSeenAt == nil {
			return time.Time{}
		}
		return *m.LastSeenAt
	}
	last := seen()
	natstest.Eventually(t, 10*time.Second, func() error {
		if !seen().After(last) {
			return errors.New("no new heartbeat stored")
		}
		return nil
	})
	flush()
	n, _, _ := kvSub.Pending()
	ta.attempt("kv", n == 0, "$KV.> subscription read %d store writes", n)
	for _, subj := range []string{"$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.ACCOUNT.APP.CONNZ", subject.CalloutRequest} {
		ta.attempt("sys", noAnswer(attacker, subj, []byte("{}")), "%s answered", subj)
	}
	sysSub, err := attacker.SubscribeSync("$SYS.>")
	if err != nil {
		t.Fatal(err)
	}
	flush()
	probe := agentNATS(t, p, b2, nil) // a connect and a disconnect: the server emits $SYS events
	probe.Close()
	flush()
	n, _, _ = sysSub.Pending()
	ta.attempt("sys", n == 0, "$SYS.> subscription read %d events", n)

	// 4. Inbox snooping: control-plane replies travel on _OGCTL (the Go
	// library) and _INBOX (the reference TypeScript control plane, emulated
	// by a control connection with the default prefix); other machines'
	// private inboxes are theirs.
	tsCtl, err := nats.Connect(p.NATSURL(), p.ControlNATSOptions()[0], nats.Name("ts-like-control")) // default _INBOX prefix
	if err != nil {
		t.Fatal(err)
	}
	defer tsCtl.Close()
	inboxes := []string{"_INBOX.>", subject.ControlInbox + ".>", subject.AgentInboxRoot + ".>", subject.AgentInboxPrefix(wsB, b1.creds.AgentID) + ".>",
		subject.AgentInboxRoot + "." + wsA + ".>"}
	inboxSnooped := map[string]*nats.Subscription{}
	for _, in := range inboxes {
		if inboxSnooped[in], err = attacker.SubscribeSync(in); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	for i := 0; i < 5; i++ {
		for _, m := range []*machine{b1, a2} {
			// The reference control plane's request: _INBOX reply, and the agent answers it.
			reply, err := tsCtl.Request(m.rpc(), mustPing(t), 5*time.Second)
			if err != nil {
				t.Fatalf("TS-like control → %s: %v", m.creds.AgentID, err)
			}
			var resp agentpb.ControlResponse
			if err := proto.Unmarshal(reply.Data, &resp); err != nil || resp.GetPing() == nil {
				t.Fatalf("TS-like control reply: %v %v", &resp, err)
			}
			if !session(t, p.ControlConnFactory(), m.creds).Ping(ctx) {
				t.Fatal(err)
			}
		}
	}
	flush()
	for _, in := range inboxes {
		n, _, _ := inboxSnooped[in].Pending()
		ta.attempt("inbox-snoop", n == 0, "%s read %d replies", in, n)
	}
	// Publishing into inboxes: the control plane's and another machine's.
	b1Obs := victims["B1"].nc
	for _, c := range []struct {
		rcv  *nats.Conn
		subj string
	}{{ctl, "_INBOX.guess"}, {ctl, subject.ControlInbox + ".guess"}, {b1Obs, subject.AgentInboxPrefix(wsB, b1.creds.AgentID) + ".guess"}} {
		sub, err := c.rcv.SubscribeSync(c.subj)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.rcv.Flush(); err != nil {
			t.Fatal(err)
		}
		_ = attacker.Publish(c.subj, forgedReply(t))
		flush()
		if err := c.rcv.Flush(); err != nil {
			t.Fatal(err)
		}
		n, _, _ := sub.Pending()
		ta.attempt("inbox-publish", n == 0, "publish to %s delivered", c.subj)
		_ = sub.Unsubscribe()
	}

	// 5. A forged reply racing the real machine: the attacker even knows the
	// reply subject (as if leaked) and publishes a forged answer before the
	// request goes out. The control plane must read only A2's own answer.
	forged := forgedReply(t)
	for i := 0; i < 20; i++ {
		for _, c := range []*nats.Conn{ctl, tsCtl} {
			inbox := c.NewInbox()
			sub, err := c.SubscribeSync(inbox)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			_ = attacker.Publish(inbox, forged)
			flush()
			id := uuid.NewString()
			req, _ := proto.Marshal(&agentpb.ControlRequest{RequestId: id, Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{}}})
			if err := c.PublishRequest(a2.rpc(), inbox, req); err != nil {
				t.Fatal(err)
			}
			m, err := sub.NextMsg(5 * time.Second)
			var resp agentpb.ControlResponse
			genuine := err == nil && proto.Unmarshal(m.Data, &resp) == nil && resp.GetRequestId() == id && resp.GetPing() != nil
			ta.attempt("forged-reply", genuine, "control read %v (%v) instead of A2's answer", &resp, err)
			_ = sub.Unsubscribe()
		}
	}
	deliveredAnywhere()

	// 6. Credentials: a consumed device code polled again, and a revoked
	// machine's bearer.
	for _, m := range []*machine{a1, b1, b2} {
		var out struct {
			State       string         `json:"state"`
			Credentials map[string]any `json:"credentials"`
		}
		for i := 0; i < 3; i++ {
			err := p.Admin().Do(ctx, http.MethodPost, "/v1/enrollments/device/poll", map[string]string{"deviceCode": m.deviceCode}, &out)
			ta.attempt("consumed-device-code", err == nil && out.State != "authorized" && out.Credentials == nil, "poll of a consumed code: %+v %v", out, err)
		}
	}
	// A cloned credential started as a second runner (a next-revision
	// connection name) while the real machine is live: denied by the
	// connection lease, and the real machine keeps its work, addressed by
	// its live instance.
	for i := 0; i < 3; i++ {
		nc, err := nats.Connect(p.NATSURL(), nats.Token(a2.creds.NATSBearer), nats.NoReconnect(), nats.Timeout(3*time.Second),
			nats.Name(subject.ConnectionNamePrefix+uuid.NewString()))
		if err == nil {
			nc.Close()
		}
		ta.attempt("cloned-credentials-second-runner", err != nil, "a second runner with A2's credentials connected")
	}
	routed := session(t, p.ControlConnFactory(), a2.creds)
	inst, err := p.Store().LiveInstance(ctx, wsA, a2.creds.AgentID)
	if err != nil || inst == "" {
		t.Fatalf("A2's live instance: %q %v", inst, err)
	}
	rs, err := control.NewSession(control.SessionConfig{WorkspaceID: wsA, AgentID: a2.creds.AgentID, RPC: control.NewNATSRPC(p.ControlConnFactory()),
		Instances: p.Store(), Timeout: 5 * time.Second})
	if err != nil || !rs.Ping(ctx) || !routed.Ping(ctx) {
		t.Fatalf("A2 over its instance subject and the v1 subject: %v", err)
	}
	if n := victims["A2"].delivered(t); n != 1 { // the v1 ping; the routed one went to the instance subject
		t.Fatalf("A2's v1 subject saw %d requests, want 1", n)
	}

	delete(victims, "B2") // its observer is kicked with it
	var revoked struct {
		Revoked bool `json:"revoked"`
	}
	if err := p.Admin().Do(ctx, http.MethodPost, "/v1/workspaces/"+wsB+"/enrollments/"+b2.creds.AgentID+"/revoke", nil, &revoked); err != nil || !revoked.Revoked {
		t.Fatalf("revoke: %v %v", revoked, err)
	}
	for i := 0; i < 5; i++ {
		nc, err := nats.Connect(p.NATSURL(), nats.Token(b2.creds.NATSBearer), nats.NoReconnect(), nats.Timeout(3*time.Second))
		if err == nil {
			nc.Close()
		}
		ta.attempt("revoked-bearer", err != nil, "a revoked bearer connected")
	}
	if deliveredAnywhere() != 0 {
		t.Error("a victim received a message during the credential attacks")
	}
}

func mustPing(t *testing.T) []byte {
	t.Helper()
	b, err := proto.Marshal(&agentpb.ControlRequest{RequestId: uuid.NewString(), Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func forgedReply(t *testing.T) []byte {
	t.Helper()
	b, err := proto.Marshal(&agentpb.ControlResponse{RequestId: "forged", Error: &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_OS, Message: "forged"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
