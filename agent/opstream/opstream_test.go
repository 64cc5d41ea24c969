package opstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const (
	testWS    = "22222222-2222-2222-2222-222222222222"
	testAgent = "agent-opstream"
)

type fixture struct {
	srv   *server.Server
	agent *agent.Agent
	root  string
}

// start runs a real agent on a real in-process nats-server.
func start(t testing.TB) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	root := t.TempDir()
	a, err := agent.New(agent.Options{Servers: []string{srv.ClientURL()}, WorkspaceID: testWS, AgentID: testAgent, WorkspaceRoot: root,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("agent did not stop")
		}
	})
	f := &fixture{srv: srv, agent: a, root: root}
	s := f.session(t)
	natstest.Eventually(t, 10*time.Second, func() error {
		if !s.Ping(context.Background()) {
			return errors.New("agent not answering yet")
		}
		return nil
	})
	return f
}

// session is a control session on its own connection to the machine's
// live instance.
func (f *fixture) session(t testing.TB, opts ...nats.Option) *control.Session {
	t.Helper()
	nc := natstest.Connect(t, f.srv, opts...)
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: testWS, AgentID: testAgent,
		RPC: control.NewNATSRPC(control.StaticConn(nc)), Timeout: 10 * time.Second,
		Instances: control.InstanceResolverFunc(func(context.Context, string, string) (string, error) { return f.agent.Instance(), nil })})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func execStart(argv ...string) *agentpb.OpStart {
	return &agentpb.OpStart{Op: &agentpb.OpStart_Exec{Exec: &agentpb.ExecRequest{Command: argv}}}
}

// seqOutput is what `seq 1 n` prints.
func seqOutput(n int) []byte {
	var b bytes.Buffer
	for i := 1; i <= n; i++ {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func TestHelloAnnouncesOpStream(t *testing.T) {
	f := start(t)
	if !f.agent.Hello().GetCapabilities().GetOpStream() {
		t.Fatal("Hello does not announce op_stream although the ops are served")
	}
}

// The first output arrives while the command still runs: the command
// waits for a marker the test creates only after it saw that output.
func TestExecOutputStreamsWhileRunning(t *testing.T) {
	f := start(t)
	s := f.session(t)
	ctx := context.Background()
	marker := filepath.Join(f.root, "go-on")
	op, _, err := s.StartOp(ctx, execStart("sh", "-c", `echo first; while [ ! -e "$1" ]; do sleep 0.01; done; echo second >&2; exit 7`, "sh", marker), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	fr, err := op.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := fr.GetData(); d.GetChannel() != agentpb.OpChannel_OP_CHANNEL_STDOUT || string(d.GetBytes()) != "first\n" || fr.GetSeq() != 1 {
		t.Fatalf("first frame: %v", fr)
	}
	if st, err := op.Query(ctx); err != nil || st.GetState() != agentpb.OpState_OP_STATE_RUNNING {
		t.Fatalf("op should still run after its first output: %v %v", st, err)
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	exit, err := op.Consume(ctx, func(ch agentpb.OpChannel, b []byte) error {
		if ch == agentpb.OpChannel_OP_CHANNEL_STDERR {
			stderr.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if exit.GetExitCode() != 7 || stderr.String() != "second\n" || exit.GetTotals()["stdout"] != 6 || exit.GetTotals()["stderr"] != 7 ||
		len(exit.GetDigests()["stdout"]) != 64 || exit.GetFailureCode() != "" {
		t.Fatalf("exit %v, stderr %q", exit, stderr.String())
	}
}

// Cancel kills the whole tree: a background grandchild dies too.
func TestCancelKillsProcessTree(t *testing.T) {
	f := start(t)
	s := f.session(t)
	ctx := context.Background()
	op, _, err := s.StartOp(ctx, execStart("sh", "-c", `sleep 1000 & echo $!; wait`), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	fr, err := op.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(fr.GetData().GetBytes())))
	if err != nil {
		t.Fatalf("grandchild pid: %v (%q)", err, fr.GetData().GetBytes())
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("grandchild %d not running before the cancel: %v", pid, err)
	}
	if _, err := op.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	exit, err := op.Consume(ctx, func(agentpb.OpChannel, []byte) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !exit.GetCancelled() || exit.GetFailureCode() != "CANCELLED" {
		t.Fatalf("exit after cancel: %v", exit)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if err := syscall.Kill(pid, 0); err == nil {
			// A zombie still answers kill -0 until reaped by init; check its state.
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !bytes.Contains(st, []byte(") Z")) {
				return fmt.Errorf("grandchild %d still alive", pid)
			}
		}
		return nil
	})
}

// A consumer that goes away mid-op (its frames unacked) is replaced by one
// that attaches from the first seq it lacks; together they see every byte
// exactly once. The small window keeps the command paced by credit.
func TestReattachReplaysExactlyTheMissingFrames(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	const n = 100000
	want := seqOutput(n)
	opts := &control.OpOptions{Window: 32 << 10}

	first := f.session(t)
	op, _, err := first.StartOp(ctx, execStart("seq", "1", strconv.Itoa(n)), opts)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for got.Len() < 100<<10 {
		fr, err := op.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(fr.GetData().GetBytes())
	}
	resumeAt, resumeBytes := op.Position()
	op.Close() // the viewer's connection is gone; the op goes on on the machine

	second := f.session(t)
	op2, err := second.AttachOp(ctx, op.ID(), resumeAt, resumeBytes, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer op2.Close()
	exit, err := op2.Consume(ctx, func(_ agentpb.OpChannel, b []byte) error { got.Write(b); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes, want %d; equal prefix %d", got.Len(), len(want), commonPrefix(got.Bytes(), want))
	}
	if exit.GetTotals()["stdout"] != uint64(len(want)) || exit.GetExitCode() != 0 {
		t.Fatalf("exit %v", exit)
	}
	// Attaching from a position already acked (a stale consumer) is a
	// clear refusal, never an endless wait for frames that are gone.
	var ce *control.Error
	if _, err := second.AttachOp(ctx, op.ID(), 1, 0, opts); !errors.As(err, &ce) || ce.Detail["reason"] != "acked" {
		t.Fatalf("attach from an acked seq: %v", err)
	}
}

// The consumer's own NATS connection drops and comes back mid-op: frames
// published meanwhile went nowhere; the consumer notices and reattaches
// from the first seq it lacks, losing and doubling nothing.
func TestConsumerReconnectLosesNothing(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	const n = 200000
	want := seqOutput(n)
	nc := natstest.Connect(t, f.srv, nats.ReconnectWait(10*time.Millisecond), nats.MaxReconnects(-1))
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: testWS, AgentID: testAgent,
		RPC: control.NewNATSRPC(control.StaticConn(nc)), Timeout: 10 * time.Second,
		Instances: control.InstanceResolverFunc(func(context.Context, string, string) (string, error) { return f.agent.Instance(), nil })})
	if err != nil {
		t.Fatal(err)
	}
	op, _, err := s.StartOp(ctx, execStart("seq", "1", strconv.Itoa(n)), &control.OpOptions{Window: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	var got bytes.Buffer
	reconnected := false
	for {
		fr, err := op.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if e := fr.GetExit(); e != nil {
			break
		}
		got.Write(fr.GetData().GetBytes())
		if !reconnected && got.Len() > 200<<10 {
			reconnected = true
			if err := nc.ForceReconnect(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("got %d bytes, want %d; equal prefix %d", got.Len(), len(want), commonPrefix(got.Bytes(), want))
	}
	if nc.Stats().Reconnects == 0 {
		t.Fatal("the connection never reconnected: the test proved nothing")
	}
}

// Credit bounds production: a consumer that takes nothing gets exactly its
// window published (seen by a raw subscriber beside it) while the command,
// blocked on its pipe, keeps running; then it takes everything, and no
// byte was lost.
func TestCreditBoundsOutputWithoutLoss(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	const window = 16 << 10
	const n = 50000
	want := seqOutput(n)
	s := f.session(t)

	w := watchFrames(t, f, ">")

	op, _, err := s.StartOp(ctx, execStart("seq", "1", strconv.Itoa(n)), &control.OpOptions{Window: window})
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	natstest.Eventually(t, 10*time.Second, func() error {
		if p := w.bytesPublished(); p < window {
			return fmt.Errorf("%d of the window's %d bytes published", p, window)
		}
		return nil
	})
	st, err := op.Query(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// every frame before next_seq reached the raw subscriber
	natstest.Eventually(t, 10*time.Second, func() error { return w.seenBefore(st.GetNextSeq()) })
	atQuery := w.bytesPublished()
	if atQuery != window || st.GetState() != agentpb.OpState_OP_STATE_RUNNING {
		t.Fatalf("without acks the agent published %d bytes (window %d), op %v", atQuery, window, st.GetState())
	}
	var got bytes.Buffer
	exit, err := op.Consume(ctx, func(_ agentpb.OpChannel, b []byte) error { got.Write(b); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) || exit.GetTotals()["stdout"] != uint64(len(want)) {
		t.Fatalf("got %d bytes, want %d; exit %v", got.Len(), len(want), exit)
	}
}

// A repeated OpStart with the same op id attaches: the command ran once.
func TestOpStartIsIdempotent(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	nc := natstest.Connect(t, f.srv)
	counter := filepath.Join(f.root, "runs")
	req := &agentpb.ControlRequest{RequestId: "tool-call-1:0", Op: &agentpb.ControlRequest_OpStart{
		OpStart: execStart("sh", "-c", `echo run >> "$1"`, "sh", counter)}}
	rpc := subject.Connection(testWS, testAgent, f.agent.Instance()) + ".rpc"
	send := func() *agentpb.ControlResponse {
		b, _ := proto.Marshal(req)
		msg, err := nc.Request(rpc, b, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var resp agentpb.ControlResponse
		if err := proto.Unmarshal(msg.Data, &resp); err != nil {
			t.Fatal(err)
		}
		return &resp
	}
	first := send()
	if !first.GetOpStart().GetAccepted() || first.GetOpStart().GetStatus().GetOpId() != "tool-call-1:0" {
		t.Fatalf("first start: %v", first)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		s := f.session(t)
		op, err := s.AttachOp(ctx, "tool-call-1:0", 1, 0, nil)
		if err != nil {
			return err
		}
		defer op.Close()
		st, err := op.Query(ctx)
		if err != nil || st.GetState() != agentpb.OpState_OP_STATE_COMPLETE {
			return fmt.Errorf("not complete yet: %v %v", st, err)
		}
		return nil
	})
	second := send()
	if !second.GetOpStart().GetAccepted() || second.GetOpStart().GetStatus().GetState() != agentpb.OpState_OP_STATE_COMPLETE {
		t.Fatalf("repeated start: %v", second)
	}
	if b, _ := os.ReadFile(counter); string(b) != "run\n" {
		t.Fatalf("the command ran %d times", strings.Count(string(b), "run"))
	}
}

// An op this agent process never knew is reported lost: the agent restarted.
func TestUnknownOpIsLostAgentRestarted(t *testing.T) {
	f := start(t)
	s := f.session(t)
	_, err := s.AttachOp(context.Background(), "from-an-earlier-process", 1, 0, nil)
	var lost *control.OpLostError
	if !errors.As(err, &lost) || lost.Reason != agentpb.OpLostReason_OP_LOST_REASON_AGENT_RESTARTED {
		t.Fatalf("attach to an unknown op: %v", err)
	}
}

func commonPrefix(a, b []byte) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return i
}
