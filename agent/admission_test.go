package agent

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/quartz"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// blockingDispatcher serves fs_stat (heavy) until release is closed, ping
// (inline) and metrics (light); entered receives one value per fs_stat
// that started running.
func blockingDispatcher(slots, queue int) (d *Dispatcher, entered chan struct{}, release chan struct{}) {
	d = NewDispatcher(nil, slots)
	d.SetQueueLimit(queue)
	entered = make(chan struct{}, 1024)
	release = make(chan struct{})
	Handle(d, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
		entered <- struct{}{}
		<-release
		return &agentpb.FsStatResponse{Exists: true}, nil
	})
	Handle(d, "ping", Inline, func(_ context.Context, r *agentpb.PingRequest) (*agentpb.PingResponse, error) {
		return &agentpb.PingResponse{Nonce: r.GetNonce()}, nil
	})
	Handle(d, "metrics", Light, func(context.Context, *agentpb.MetricsRequest) (*agentpb.MetricsSample, error) {
		return &agentpb.MetricsSample{SampledAtMs: 1}, nil
	})
	return d, entered, release
}

func isBusy(r *agentpb.ControlResponse) bool {
	e := r.GetError()
	return e.GetCode() == agentpb.ErrorCode_ERROR_CODE_DRAINING && e.GetRetryable() &&
		strings.HasPrefix(e.GetMessage(), "machine busy: ") && e.GetDetail()["reason"] == "busy"
}

// A flood of heavy ops beyond slots+queue: exactly the excess is refused
// busy at once, the admitted ones all succeed, the queue never holds more
// than its limit, and ping and metrics are answered throughout.
func TestFloodBeyondQueueIsRefusedBusy(t *testing.T) {
	const slots, queue, flood = 2, 3, 64
	d, entered, release := blockingDispatcher(slots, queue)

	replies := make(chan *agentpb.ControlResponse, flood)
	for i := range flood {
		go func() {
			b, _ := proto.Marshal(stat(fmt.Sprintf("req-%d", i), "x"))
			replies <- decodeReply(t, d.Dispatch(context.Background(), b, 0))
		}()
	}
	// Refusals come back at once; the admitted ops hold until release.
	var busy int
	for range flood - slots - queue {
		r := <-replies
		if !isBusy(r) {
			t.Fatalf("reply before release is not a busy refusal: %v", r)
		}
		if got := r.GetError().GetDetail()["queue_limit"]; got != "3" {
			t.Fatalf("queue_limit detail = %q, want 3", got)
		}
		busy++
	}
	for range slots {
		<-entered
	}
	if q := d.Queue(); q.Queued != queue || q.Running != slots || q.Limit != queue || q.Refused != flood-slots-queue {
		t.Fatalf("saturated queue = %+v", q)
	}
	// Liveness ops are never refused for busy.
	if r := roundTrip(t, d, ping("p", 0), 0); r.GetPing().GetNonce() != 99 {
		t.Fatalf("ping on a saturated machine: %v", r)
	}
	m := &agentpb.ControlRequest{RequestId: "m", Op: &agentpb.ControlRequest_Metrics{Metrics: &agentpb.MetricsRequest{}}}
	if r := roundTrip(t, d, m, 0); r.GetMetrics().GetSampledAtMs() != 1 {
		t.Fatalf("metrics on a saturated machine: %v", r)
	}
	close(release)
	for range slots + queue {
		if r := <-replies; r.GetError() != nil || !r.GetFsStat().GetExists() {
			t.Fatalf("admitted op failed: %v", r)
		}
	}
	if busy != flood-slots-queue {
		t.Fatalf("%d refused, want %d", busy, flood-slots-queue)
	}
	if q := d.Queue(); q.Queued != 0 || q.Running != 0 || d.Active() != 0 {
		t.Fatalf("queue after the flood = %+v, active %d", q, d.Active())
	}
	// Capacity is back: a new op is admitted.
	if r := roundTrip(t, d, stat("after", "x"), 0); r.GetError() != nil {
		t.Fatalf("op after the flood: %v", r)
	}
}

// A busy refusal is decided in Accept and answered inline: it neither takes
// a goroutine nor joins the order chain of its key.
func TestBusyRefusalIsInlineAndUnordered(t *testing.T) {
	d, entered, release := blockingDispatcher(1, 1)
	defer close(release)
	enc := func(r *agentpb.ControlRequest) []byte { b, _ := proto.Marshal(r); return b }
	running := d.Accept(enc(stat("a", "x")))
	go d.Serve(context.Background(), running, 0)
	<-entered
	waiting := d.Accept(enc(stat("b", "x")))
	go d.Serve(context.Background(), waiting, 0)
	refused := d.Accept(enc(stat("c", "x")))
	if !refused.Inline() {
		t.Fatal("busy refusal is not served inline")
	}
	if r := decodeReply(t, d.Serve(context.Background(), refused, 0)); !isBusy(r) {
		t.Fatalf("third heavy op = %v, want busy", r)
	}
	if d.Queue().Queued != 1 {
		t.Fatalf("queue = %+v", d.Queue())
	}
}

// Accept racing BeginDrain and Wait: every op is either served or refused
// DRAINING, Wait returns only when nothing admitted is left, and nothing is
// admitted after it returned. Before the admission gate, sync.WaitGroup.Add
// ran concurrently with Wait (the race detector reports it).
func TestDrainWhileAcceptingNeverRaces(t *testing.T) {
	for round := range 20 {
		d := NewDispatcher(nil, 4)
		var started, afterDrain atomic.Int64
		var drained atomic.Bool
		flowing := make(chan struct{})
		Handle(d, "fs_stat", Heavy, func(context.Context, *agentpb.FsStatRequest) (*agentpb.FsStatResponse, error) {
			if started.Add(1) == 10 {
				close(flowing)
			}
			if drained.Load() {
				afterDrain.Add(1)
			}
			return &agentpb.FsStatResponse{Exists: true}, nil
		})
		b, _ := proto.Marshal(stat("r", "x"))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var unexpected atomic.Value
		for range 4 { // concurrent deliverers hammering Accept/Serve
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					r := &agentpb.ControlResponse{}
					_ = proto.Unmarshal(d.Dispatch(context.Background(), b, 0), r)
					if r.GetError() != nil && r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_DRAINING {
						unexpected.Store(r.GetError().String())
					}
				}
			}()
		}
		<-flowing // ops are being served when the drain begins
		d.BeginDrain()
		if err := d.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		drained.Store(true)
		if r := roundTrip(t, d, stat("late", "x"), 0); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_DRAINING {
			t.Fatalf("round %d: op after the drain = %v", round, r)
		}
		close(stop)
		wg.Wait()
		if n := afterDrain.Load(); n != 0 {
			t.Fatalf("round %d: %d ops ran after Wait returned", round, n)
		}
		if v := unexpected.Load(); v != nil {
			t.Fatalf("round %d: unexpected error %v", round, v)
		}
	}
}

// Wait timing out while an op is in flight leaves no goroutine behind.
func TestWaitTimeoutLeaksNoGoroutine(t *testing.T) {
	d, entered, release := blockingDispatcher(1, 1)
	done := make(chan struct{})
	go func() { defer close(done); roundTrip(t, d, stat("slow", "x"), 0) }()
	<-entered
	d.BeginDrain()
	baseline := goleak.IgnoreCurrent()
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := d.Wait(ctx); err == nil {
			t.Fatal("Wait returned nil with an op in flight")
		}
	}
	goleak.VerifyNone(t, baseline)
	close(release)
	<-done
	if err := d.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Repeated DRAINING refusals log one line per interval, and the next line
// counts the ones left out.
func TestDrainingRefusalsAreRateLimitedInTheLog(t *testing.T) {
	var buf syncbuf.Buffer
	d := NewDispatcher(slog.New(slog.NewTextHandler(&buf, nil)), 1)
	Handle(d, "ping", Inline, func(_ context.Context, r *agentpb.PingRequest) (*agentpb.PingResponse, error) {
		return &agentpb.PingResponse{}, nil
	})
	now := time.Unix(1000, 0)
	d.refusalLog.Now = func() time.Time { return now }
	d.BeginDrain()
	for range 100 {
		if r := roundTrip(t, d, ping("p", 0), 0); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_DRAINING {
			t.Fatalf("ping while draining = %v", r)
		}
	}
	lines := linesWith(buf.String(), "ERROR_CODE_DRAINING")
	if len(lines) != 1 || !strings.Contains(lines[0], "suppressed=0") {
		t.Fatalf("after 100 refusals the log has %d DRAINING lines: %q", len(lines), lines)
	}
	now = now.Add(time.Minute)
	roundTrip(t, d, ping("p", 0), 0)
	lines = linesWith(buf.String(), "ERROR_CODE_DRAINING")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed=99") {
		t.Fatalf("after the interval: %q", lines)
	}
}

// linesWith are the lines of text that contain substr.
func linesWith(text, substr string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return out
}

// Over NATS, against the running agent: a flood of heavy ops beyond the
// configured queue gets exactly the excess refused busy, ping is answered
// while saturated, every admitted op succeeds, and the heartbeat log
// reports the queue.
func TestAgentRefusesFloodBeyondQueueOverNATS(t *testing.T) {
	const slots, queue, flood = 2, 3, 40
	s := natstest.Start(t)
	nc := natstest.Connect(t, s)
	hellos := subscribe(t, nc, testSubject("hello"))
	var logs syncbuf.Buffer
	release := make(chan struct{})
	entered := make(chan struct{}, flood)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	clk := quartz.NewMock(t)
	heartbeats := clk.Trap().NewTicker("agent", "heartbeat")
	ra := startAgent(t, s.ClientURL(), func(o *Options) {
		o.MaxConcurrentOps, o.MaxQueuedOps = slots, queue
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		o.Clock, o.HeartbeatInterval = clk, time.Minute
	}, func(a *Agent) {
		blocking := NewDispatcher(nil, slots)
		Handle(blocking, "fs_write", Heavy, func(_ context.Context, r *agentpb.FsWriteRequest) (*agentpb.FsWriteResponse, error) {
			entered <- struct{}{}
			<-release
			return &agentpb.FsWriteResponse{BytesWritten: uint64(len(r.GetContent()))}, nil
		})
		a.dispatch.handlers["fs_write"] = blocking.handlers["fs_write"]
	})
	heartbeats.MustWait(ctx).MustRelease(ctx)
	heartbeats.Close()
	next(t, hellos, &agentpb.Hello{})

	replies := make(chan *nats.Msg, flood)
	if _, err := nc.ChanSubscribe("reply.flood", replies); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), 64<<10)
	for i := range flood {
		req := &agentpb.ControlRequest{RequestId: fmt.Sprintf("w%d", i), Op: &agentpb.ControlRequest_FsWrite{
			FsWrite: &agentpb.FsWriteRequest{Path: fmt.Sprintf("f%d", i), Content: payload}}}
		if err := nc.PublishRequest(ra.Subject("rpc"), "reply.flood", mustMarshal(t, req)); err != nil {
			t.Fatal(err)
		}
	}
	for range flood - slots - queue {
		if r := next(t, replies, &agentpb.ControlResponse{}); !isBusy(r) {
			t.Fatalf("reply while saturated is not busy: %v", r)
		}
	}
	for range slots {
		<-entered
	}
	if r := request(t, nc, ping("p", 0)); r.GetPing() == nil {
		t.Fatalf("ping while saturated: %v", r)
	}
	clk.Advance(time.Minute).MustWait(ctx) // the next heartbeat reports the queue
	natstest.Eventually(t, 10*time.Second, func() error {
		if l := linesWith(logs.String(), "op queue"); len(l) == 0 || !strings.Contains(l[len(l)-1], fmt.Sprintf("refused_busy_total=%d", flood-slots-queue)) ||
			!strings.Contains(l[len(l)-1], fmt.Sprintf("queue_depth=%d", queue)) {
			return fmt.Errorf("no heartbeat queue report yet: %q", l)
		}
		return nil
	})
	close(release)
	for range slots + queue {
		if r := next(t, replies, &agentpb.ControlResponse{}); r.GetError() != nil || r.GetFsWrite().GetBytesWritten() != uint64(len(payload)) {
			t.Fatalf("admitted op: %v", r)
		}
	}
}
