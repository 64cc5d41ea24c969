package agent

import (
	"fmt"

	"context"
	"errors"
	"github.com/google/uuid"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/coder/quartz"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const (
	testWS    = "11111111-1111-1111-1111-111111111111"
	testAgent = "agent-test"
)

// testSubject is the test agent's subject with suffix, as Agent.Subject
// builds it.
func testSubject(suffix string) string { return "agent." + testWS + "." + testAgent + "." + suffix }

type runningAgent struct {
	*Agent
	cancel context.CancelCauseFunc
	done   chan error
}

// startAgent runs an agent; setup runs before it connects (handler overrides).
func startAgent(t testing.TB, url string, mutate func(*Options), setup ...func(*Agent)) *runningAgent {
	t.Helper()
	opts := Options{
		Servers:           []string{url},
		WorkspaceID:       testWS,
		AgentID:           testAgent,
		WorkspaceRoot:     t.TempDir(),
		HeartbeatInterval: 50 * time.Millisecond,
		DrainTimeout:      10 * time.Second,
	}
	if mutate != nil {
		mutate(&opts)
	}
	a, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(a)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	ra := &runningAgent{Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel(nil)
		select {
		case <-ra.done:
		case <-time.After(15 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return ra
}

func subscribe(t testing.TB, nc *nats.Conn, subject string) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func next[T proto.Message](t testing.TB, ch chan *nats.Msg, into T) T {
	t.Helper()
	select {
	case m := <-ch:
		if err := proto.Unmarshal(m.Data, into); err != nil {
			t.Fatalf("decode %s: %v", m.Subject, err)
		}
		return into
	case <-time.After(10 * time.Second):
		t.Fatalf("no message within 10s")
	}
	return into
}

func request(t *testing.T, nc *nats.Conn, req *agentpb.ControlRequest) *agentpb.ControlResponse {
	t.Helper()
	msg, err := nc.Request(testSubject("rpc"), mustMarshal(t, req), 10*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	return decodeReply(t, msg.Data)
}

func TestHelloHeartbeatsPingAndMetrics(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	hellos := subscribe(t, nc, testSubject("hello"))
	events := subscribe(t, nc, testSubject("events"))

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	clk := quartz.NewMock(t)
	ticker := clk.Trap().NewTicker("agent", "heartbeat")
	defer ticker.Close()
	ra := startAgent(t, s.ClientURL(), func(o *Options) { o.MachineName = "buildbox"; o.Clock = clk; o.HeartbeatInterval = time.Minute })
	ticker.MustWait(ctx).MustRelease(ctx)

	h := next(t, hellos, &agentpb.Hello{})
	if h.GetAgentId() != testAgent || h.GetWorkspaceId() != testWS || h.GetMachineName() != "buildbox" ||
		h.GetOs() != HostOS() || h.GetArch() != HostArch() || h.GetAgentVersion() != Version ||
		h.GetWorkspaceRoot() != ra.root.Dir || h.GetUpdateChannel() != "stable" {
		t.Fatalf("hello = %v", h)
	}
	if !h.GetCapabilities().GetConsentedWholeMachine() || h.GetCapabilities().GetConsentedScreenControl() {
		t.Fatalf("consent in hello = %v", h.GetCapabilities())
	}

	// The first heartbeat follows the connect at once, the second the
	// interval on the agent's clock.
	var lastSeq uint64
	for i := 0; i < 2; i++ {
		if i > 0 {
			clk.Advance(time.Minute).MustWait(ctx)
		}
		ev := next(t, events, &agentpb.AgentEvent{})
		hb := ev.GetHeartbeat()
		if ev.GetAgentId() != testAgent || hb == nil {
			t.Fatalf("event = %v", ev)
		}
		if hb.GetSeq() != lastSeq+1 {
			t.Fatalf("heartbeat seq %d after %d", hb.GetSeq(), lastSeq)
		}
		lastSeq = hb.GetSeq()
		if m := hb.GetMetrics(); m.GetMemTotalBytes() == 0 || m.GetSampledAtMs() == 0 || m.GetDiskTotalBytes() == 0 {
			t.Fatalf("heartbeat metrics not sampled: %v", m)
		}
	}

	resp := request(t, nc, &agentpb.ControlRequest{RequestId: "req-ping", Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: 1 << 52}}})
	if resp.GetRequestId() != "req-ping" || resp.GetPing().GetNonce() != 1<<52 {
		t.Fatalf("ping reply %v", resp)
	}
	resp = request(t, nc, &agentpb.ControlRequest{RequestId: "req-m", Op: &agentpb.ControlRequest_Metrics{Metrics: &agentpb.MetricsRequest{}}})
	if resp.GetMetrics().GetMemTotalBytes() == 0 {
		t.Fatalf("metrics reply %v", resp)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestRidesOutNATSOutage(t *testing.T) {
	port := freePort(t)
	s1 := natstest.Run(t, natstest.Port(port))
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	startAgent(t, url, nil)

	watch := func(s *server.Server) (*nats.Conn, chan *nats.Msg) {
		nc := natstest.Connect(t, s)
		return nc, subscribe(t, nc, testSubject("hello"))
	}
	nc1, _ := watch(s1)
	natstest.Eventually(t, 10*time.Second, func() error {
		_, err := nc1.Request(testSubject("rpc"), mustMarshal(t, ping("p1", 0)), time.Second)
		return err
	})
	nc1.Close()
	s1.Shutdown()
	s1.WaitForShutdown()

	// The machine comes back on its own when NATS does, says Hello again and serves.
	s2 := natstest.Start(t, natstest.Port(port))
	nc2, hellos := watch(s2)
	next(t, hellos, &agentpb.Hello{})
	if r := request(t, nc2, ping("p2", 0)); r.GetPing() == nil {
		t.Fatalf("after reconnect: %v", r)
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStopAnnouncesGoingOfflineAndDrains(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause error
		want  agentpb.GoingOfflineReason
	}{
		{"user stop", nil, agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP},
		{"update", StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_UPDATE, Message: "updating to 0.2.0"}, agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_UPDATE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := natstest.Start(t)
			nc := natstest.Connect(t, s)
			events := subscribe(t, nc, testSubject("events"))
			hellos := subscribe(t, nc, testSubject("hello"))
			release := make(chan struct{})
			entered := make(chan struct{})
			ra := startAgent(t, s.ClientURL(), func(o *Options) { o.HeartbeatInterval = time.Hour }, func(a *Agent) {
				// Replace the real fs_stat with a slow one, registered the usual way.
				slowStat := NewDispatcher(nil, 1)
				Handle(slowStat, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
					close(entered)
					<-release
					return &agentpb.FsStatResponse{Exists: true}, nil
				})
				a.dispatch.handlers["fs_stat"] = slowStat.handlers["fs_stat"]
			})
			next(t, hellos, &agentpb.Hello{})

			slow := make(chan *nats.Msg, 1)
			if _, err := nc.ChanSubscribe("reply.slow", slow); err != nil {
				t.Fatal(err)
			}
			if err := nc.PublishRequest(ra.Subject("rpc"), "reply.slow", mustMarshal(t, &agentpb.ControlRequest{RequestId: "slow", Op: &agentpb.ControlRequest_FsStat{FsStat: &agentpb.FsStatRequest{}}})); err != nil {
				t.Fatal(err)
			}
			<-entered
			ra.cancel(tc.cause)

			// GoingOffline comes first (skip the connect heartbeat).
			var off *agentpb.GoingOffline
			for off == nil {
				off = next(t, events, &agentpb.AgentEvent{}).GetGoingOffline()
			}
			if off.GetReason() != tc.want {
				t.Fatalf("going offline reason %v, want %v", off.GetReason(), tc.want)
			}
			// While draining, new work is refused and retryable.
			if r := request(t, nc, ping("late", 0)); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_DRAINING || !r.GetError().GetRetryable() {
				t.Fatalf("op during drain: %v", r)
			}
			close(release)
			resp := next(t, slow, &agentpb.ControlResponse{})
			if resp.GetRequestId() != "slow" || !resp.GetFsStat().GetExists() {
				t.Fatalf("in-flight op reply: %v", resp)
			}
			select {
			case err := <-ra.done:
				if err != nil {
					t.Fatalf("Run returned %v", err)
				}
				ra.done <- nil // for the cleanup
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after drain")
			}
			// The subscription is gone: the machine is offline.
			_, err := nc.Request(ra.Subject("rpc"), mustMarshal(t, ping("gone", 0)), 2*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) {
				t.Fatalf("after stop: %v", err)
			}
		})
	}
}

// The re-dial backoff starts over after every good connection: a machine
// whose connection closed three times in a day waits the first delay, not
// the third.
func TestRedialBackoffResetsAfterAGoodConnection(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	hellos := subscribe(t, nc, testSubject("hello"))
	ra := startAgent(t, s.ClientURL(), nil, func(a *Agent) {
		a.redial.Policy = backoff.Exponential(time.Millisecond, 10*time.Millisecond)
	})
	next(t, hellos, &agentpb.Hello{})
	for i := range 3 {
		ra.mu.Lock()
		conn := ra.nc
		ra.mu.Unlock()
		conn.Close() // the connection ends for good: Run re-dials after a backoff delay
		next(t, hellos, &agentpb.Hello{})
		if got := ra.redial.Attempt(); got != 0 {
			t.Fatalf("after reconnect %d the backoff is at attempt %d, want 0", i+1, got)
		}
	}
}

// Next-revision connection instances (control.md §9): the CONNECT name
// carries a random instance id, hello and heartbeats (with capacity and
// admission telemetry) go out on both the v1 and the instance subjects, and
// requests are served on both rpc subjects.
func TestConnectionInstance(t *testing.T) {
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	connHellos := subscribe(t, nc, "agent."+testWS+"."+testAgent+".connection.*.hello")
	connEvents := subscribe(t, nc, "agent."+testWS+"."+testAgent+".connection.*.events")
	v1Hellos := subscribe(t, nc, testSubject("hello"))
	ra := startAgent(t, s.ClientURL(), nil)
	other := startAgent(t, s.ClientURL(), nil) // a second process: its own instance
	if ra.Instance() == other.Instance() || uuid.Validate(ra.Instance()) != nil {
		t.Fatalf("instances %q %q", ra.Instance(), other.Instance())
	}
	h := next(t, connHellos, &agentpb.Hello{})
	if h.GetAgentId() != testAgent || len(h.GetBinarySha256()) != 64 {
		t.Fatalf("connection hello %v", h)
	}
	next(t, v1Hellos, &agentpb.Hello{})
	for {
		ev := next(t, connEvents, &agentpb.AgentEvent{})
		if hb := ev.GetHeartbeat(); hb != nil {
			if hb.GetCapacity().GetNproc() == 0 || hb.GetCapacity().GetMemAvailableBytes() == 0 || hb.GetAdmission() == nil {
				t.Fatalf("heartbeat telemetry %v", hb)
			}
			break
		}
	}
	names := map[string]bool{}
	natstest.Eventually(t, 10*time.Second, func() error {
		cz, err := s.Connz(nil)
		if err != nil {
			return err
		}
		for _, c := range cz.Conns {
			names[c.Name] = true
		}
		if len(cz.Conns) < 3 {
			return fmt.Errorf("%d connections", len(cz.Conns))
		}
		return nil
	})
	if !names["opengeni-agent/connection/"+ra.Instance()] || !names["opengeni-agent/connection/"+other.Instance()] {
		t.Fatalf("CONNECT names %v", names)
	}
	msg, err := nc.Request(ra.ConnectionSubject("rpc"), mustMarshal(t, &agentpb.ControlRequest{RequestId: "req-inst",
		Op: &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: 7}}}), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp := decodeReply(t, msg.Data); resp.GetRequestId() != "req-inst" || resp.GetPing().GetNonce() != 7 {
		t.Fatalf("instance rpc reply %v", resp)
	}
}
