package platform

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natstest"
)

// connWatch follows an agent's connection states (Options.OnState).
type connWatch struct {
	mu      sync.Mutex
	servers []string // the server of every "connected"
	changed chan struct{}
}

func newConnWatch() *connWatch { return &connWatch{changed: make(chan struct{})} }

func (w *connWatch) onState(st agent.ConnState) {
	if st.State != agent.StateConnected {
		return
	}
	w.mu.Lock()
	w.servers = append(w.servers, st.Server)
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// waitConnectedElsewhere waits for a "connected" to a server other than
// not (host:port) and returns it.
func (w *connWatch) waitConnectedElsewhere(t testing.TB, not string) string {
	t.Helper()
	deadline := time.After(60 * time.Second) // the failure deadline, not a wait
	for {
		w.mu.Lock()
		ch := w.changed
		for _, s := range w.servers {
			if u, err := url.Parse(s); err == nil && u.Host != not {
				w.mu.Unlock()
				return s
			}
		}
		w.servers = nil
		w.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("the agent did not reconnect to a node other than %s", not)
		}
	}
}

// waitHeartbeatAfter watches the machine's record in the machines bucket
// (a KV watch: every ingested heartbeat is an update) until its heartbeat
// sequence passes seq; it returns the record.
func waitHeartbeatAfter(t testing.TB, p *Platform, c *config.Credentials, seq uint64) store.Machine {
	t.Helper()
	js, err := jetstream.New(p.Conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // the failure deadline
	defer cancel()
	var w jetstream.KeyWatcher
	natstest.Eventually(t, 60*time.Second, func() error { // the bucket may be electing a leader
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		defer acancel()
		kv, err := js.KeyValue(actx, store.DefaultPrefix+"_machines")
		if err != nil {
			return fmt.Errorf("bucket: %w", err)
		}
		if w, err = kv.Watch(ctx, "m."+c.WorkspaceID+"."+c.AgentID); err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		return nil
	})
	defer w.Stop()
	for range w.Updates() {
		m, err := p.Store().GetMachine(ctx, c.WorkspaceID, c.AgentID)
		if err == nil && m.Heartbeat != nil && m.Heartbeat.Seq > seq {
			return m
		}
		if ctx.Err() != nil {
			break
		}
	}
	t.Fatalf("no heartbeat after seq %d was ingested", seq)
	return store.Machine{}
}

// lastHeartbeat is the machine's stored heartbeat sequence (0: none).
func lastHeartbeat(t testing.TB, p *Platform, c *config.Credentials) uint64 {
	t.Helper()
	m, err := p.Store().GetMachine(context.Background(), c.WorkspaceID, c.AgentID)
	if err != nil || m.Heartbeat == nil {
		return 0
	}
	return m.Heartbeat.Seq
}

// opOutcome is what one exec of the stream got.
type opOutcome struct {
	ok        bool
	retryable bool // typed: TIMEOUT or another retryable code
	offline   bool // typed: AGENT_OFFLINE, no responder at send time (nothing ran)
	err       error
}

// Kill the node the agent is connected to in the middle of a stream of
// execs: the agent reconnects to another node, every op is answered or
// fails with a typed error (none hangs or goes missing), heartbeats resume,
// and the replicated KV keeps every record.
func TestFailoverAgentNodeKilled(t *testing.T) {
	c, p := startClusterPlatform(t)
	ctx := t.Context()
	creds := pair(t, p)
	if len(creds.NATSURLs) != 3 {
		t.Fatalf("credentials carry natsUrls %q, want the 3 nodes", creds.NATSURLs)
	}
	watch := newConnWatch()
	runAgent(t, creds, watch.onState)
	sess := session(t, p.ControlConnFactory(), creds, 5*time.Second)
	waitPing(t, sess)
	waitHeartbeatAfter(t, p, creds, 0)
	var servers []*server.Server
	for _, n := range c.nodes {
		servers = append(servers, n.srv)
	}
	at := agentServers(t, creds.AgentID, servers...)
	if len(at) != 1 {
		t.Fatalf("agent connected to %d nodes", len(at))
	}
	victim := c.nodeOf(at[0].ID())
	victimAddr := strings.TrimPrefix(victim.srv.ClientURL(), "nats://")
	enrollmentBefore, err := p.Store().GetEnrollment(ctx, creds.WorkspaceID, creds.AgentID)
	if err != nil {
		t.Fatal(err)
	}

	// The stream of execs: sequential, each with the session's deadline.
	const before, after, maxOps = 10, 20, 500
	var (
		mu       sync.Mutex
		outcomes []opOutcome
		capped   bool
	)
	killNow, reconnected, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		okAfter := 0
		for i := 0; okAfter < after; i++ {
			if i == maxOps {
				capped = true
				return
			}
			want := fmt.Sprintf("op-%d", i)
			res, err := sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"echo", want}})
			var o opOutcome
			var ce *control.Error
			switch {
			case err == nil && strings.TrimSpace(string(res.GetStdout())) == want && res.GetExitCode() == 0:
				o.ok = true
			case err == nil:
				o.err = fmt.Errorf("op %d answered %q exit %d", i, res.GetStdout(), res.GetExitCode())
			case errors.As(err, &ce):
				o.retryable, o.offline, o.err = ce.Retryable, ce.AgentOffline, err
			default:
				o.err = err
			}
			mu.Lock()
			outcomes = append(outcomes, o)
			n := len(outcomes)
			mu.Unlock()
			if n == before {
				close(killNow)
			}
			select {
			case <-reconnected:
				if o.ok {
					okAfter++
				}
			default:
				if o.offline {
					// Told agent_offline, a client waits for the machine
					// to come back rather than spin.
					<-reconnected
				}
			}
		}
	}()
	<-killNow
	hbAtKill := lastHeartbeat(t, p, creds)
	c.kill(victim)
	t.Logf("killed %s (the agent's node) after %d execs; heartbeat seq %d", victim.name, before, hbAtKill)
	now := watch.waitConnectedElsewhere(t, victimAddr)
	t.Logf("agent reconnected to %s", now)
	m := waitHeartbeatAfter(t, p, creds, hbAtKill)
	t.Logf("heartbeats resumed: seq %d", m.Heartbeat.Seq)
	close(reconnected)
	select {
	case <-done:
	case <-time.After(5 * time.Minute): // the failure deadline
		t.Fatal("the exec stream did not finish: an op hangs")
	}

	mu.Lock()
	defer mu.Unlock()
	if capped {
		t.Errorf("%d ops did not give %d answers after the reconnect", maxOps, after)
	}
	var ok, retryable, offline int
	for i, o := range outcomes {
		switch {
		case o.ok:
			ok++
		case o.retryable:
			retryable++
		case o.offline:
			offline++
		default:
			t.Errorf("op %d: neither answered nor a typed retryable/offline error: %v", i, o.err)
		}
	}
	t.Logf("FAILOVER ops=%d answered=%d retryable=%d offline=%d", len(outcomes), ok, retryable, offline)
	if ok < before+after {
		t.Fatalf("only %d ops answered", ok)
	}

	// The replicated KV lost nothing.
	if got := agentServers(t, creds.AgentID, servers...); len(got) != 1 || got[0] == victim.srv {
		t.Fatalf("agent not connected to exactly one live node")
	}
	e, err := p.Store().GetEnrollment(ctx, creds.WorkspaceID, creds.AgentID)
	if err != nil || !e.Active() || e.Generation() != enrollmentBefore.Generation() {
		t.Fatalf("enrollment after the node loss: %+v %v", e, err)
	}
	if inst, err := p.Store().LiveInstance(ctx, creds.WorkspaceID, creds.AgentID); err != nil || inst == "" {
		t.Fatalf("connection lease after the node loss: %q %v", inst, err)
	}
}

// Kill the JetStream meta leader: a new one is elected, heartbeats keep
// being ingested, and enrollment works (device flow and enroll token) with
// the new machines admitted by the callout.
func TestFailoverMetaLeaderKilled(t *testing.T) {
	c, p := startClusterPlatform(t)
	ctx := t.Context()
	first := pair(t, p)
	runAgent(t, first, nil)
	waitPing(t, session(t, p.ControlConnFactory(), first, 5*time.Second))
	waitHeartbeatAfter(t, p, first, 0)

	leader := c.metaLeader()
	if leader == nil {
		t.Fatal("no meta leader")
	}
	hb := lastHeartbeat(t, p, first)
	c.kill(leader)
	next := c.waitMetaLeader(leader)
	t.Logf("killed meta leader %s; %s leads now", leader.name, next.name)
	m := waitHeartbeatAfter(t, p, first, hb)
	t.Logf("heartbeat ingestion continues: seq %d → %d", hb, m.Heartbeat.Seq)
	waitBucketsLed(t, p)

	// Device flow.
	second := pair(t, p)
	// Enroll token.
	var mint enroll.MintResponse
	if err := p.Admin().Do(ctx, http.MethodPost, "/v1/workspaces/"+testWS+"/enrollments/token", map[string]any{}, &mint); err != nil {
		t.Fatalf("mint: %v", err)
	}
	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	client := &agentenroll.Client{BaseURL: p.APIURL(), UserAgent: "platform-test", Logger: quietLogger()}
	wire, err := client.Exchange(ctx, agentenroll.ExchangeRequest{Token: mint.Token, PublicKey: id.PublicKey(),
		OS: agentenroll.HostOS(), Arch: agentenroll.HostArch()})
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	third := agentenroll.StoredCredentials(wire, p.APIURL(), "")
	for _, cr := range []*config.Credentials{second, third} {
		runAgent(t, cr, nil)
		sess := session(t, p.ControlConnFactory(), cr, 5*time.Second)
		waitPing(t, sess)
		if res, err := sess.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"echo", cr.AgentID}}); err != nil ||
			strings.TrimSpace(string(res.GetStdout())) != cr.AgentID {
			t.Fatalf("exec on %s: %v %v", cr.AgentID, res, err)
		}
		waitHeartbeatAfter(t, p, cr, 0)
	}
}
