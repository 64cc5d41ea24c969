package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/testbin"
)

// latencies records per-op durations; the p50 of each series is reported
// next to ns/op.
type latencies []time.Duration

func (l *latencies) time(f func()) {
	start := time.Now()
	f()
	*l = append(*l, time.Since(start))
}

func p50(l latencies) time.Duration {
	s := slices.Clone(l)
	slices.Sort(s)
	return s[len(s)/2]
}

// rawRoundTrip returns the floor the ping and exec targets are stated
// against: a ping-sized request to a plain echo responder on srv.
func rawRoundTrip(b *testing.B, srv *server.Server) func() {
	resp := natstest.Connect(b, srv)
	if _, err := resp.Subscribe("bench.echo", func(m *nats.Msg) { m.Respond(m.Data) }); err != nil {
		b.Fatal(err)
	}
	if err := resp.Flush(); err != nil {
		b.Fatal(err)
	}
	req := natstest.Connect(b, srv)
	payload := make([]byte, 48)
	return func() {
		if _, err := req.Request("bench.echo", payload, 5*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// A whole 1 MiB file does not fit NATS' default 1 MiB max payload with its
// envelope, so the single-message file benchmarks run on a server with 8 MiB.
func BenchmarkReadFile1MiB(b *testing.B) {
	e := newEnv(b, []natstest.Option{natstest.MaxPayload(8 << 20)}, nil)
	s := e.session(b, nil)
	data := make([]byte, 1<<20)
	rand.Read(data)
	os.WriteFile(filepath.Join(e.root, "1m.bin"), data, 0o644)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		got, err := s.ReadFile(ctx, "/workspace/1m.bin", 0)
		if err != nil || len(got) != len(data) {
			b.Fatal(err)
		}
	}
}

func BenchmarkWriteFile1MiB(b *testing.B) {
	e := newEnv(b, []natstest.Option{natstest.MaxPayload(8 << 20)}, nil)
	s := e.session(b, nil)
	data := make([]byte, 1<<20)
	rand.Read(data)
	ctx := context.Background()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.WriteFile(ctx, "/workspace/1m.bin", data, nil); err != nil {
			b.Fatal(err)
		}
	}
}

const bigFile = 100 << 20

// BenchmarkReadFileAll100MiB moves 100 MiB through the default 1 MiB max
// payload, several ranged reads in flight.
func BenchmarkReadFileAll100MiB(b *testing.B) {
	e := newEnv(b, nil, nil)
	s := e.session(b, nil)
	f, _ := os.Create(filepath.Join(e.root, "100m.bin"))
	io.CopyN(f, rand.Reader, bigFile)
	f.Close()
	ctx := context.Background()
	b.SetBytes(bigFile)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := s.ReadFileAll(ctx, "/workspace/100m.bin", io.Discard, nil)
		if err != nil || n != bigFile {
			b.Fatal(n, err)
		}
	}
}

func BenchmarkWriteFileAll100MiB(b *testing.B) {
	e := newEnv(b, nil, nil)
	s := e.session(b, nil)
	data := make([]byte, bigFile)
	rand.Read(data)
	ctx := context.Background()
	b.SetBytes(bigFile)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		n, err := s.WriteFileAll(ctx, "/workspace/100m.bin", bytes.NewReader(data), bigFile, nil)
		if err != nil || n != bigFile {
			b.Fatal(n, err)
		}
	}
}

// The interleaved benchmarks alternate the baseline and the measured op in
// one loop, so both see the same machine load; the ratio of their p50s is
// the figure the targets are stated in.

// BenchmarkPingVsRawNATS: target ping p50 ≤ 1.3 × raw NATS round trip.
func BenchmarkPingVsRawNATS(b *testing.B) {
	e := newEnv(b, nil, nil)
	s := e.session(b, nil)
	raw := rawRoundTrip(b, e.srv)
	ctx := context.Background()
	var rawLat, ping latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rawLat.time(raw)
		ping.time(func() {
			if !s.Ping(ctx) {
				b.Fatal("ping failed")
			}
		})
	}
	b.ReportMetric(float64(p50(rawLat).Nanoseconds()), "raw-p50-ns")
	b.ReportMetric(float64(p50(ping).Nanoseconds()), "ping-p50-ns")
	b.ReportMetric(float64(p50(ping))/float64(p50(rawLat)), "ratio")
}

// BenchmarkExecVsBaseline: target exec p50 ≤ 1.15 × (raw NATS + local fork/exec of true).
func BenchmarkExecVsBaseline(b *testing.B) {
	e := newEnv(b, nil, nil)
	benchExecVsBaseline(b, e.srv, e.session(b, nil))
}

// benchExecVsBaseline alternates a raw NATS round trip, a plain fork/exec,
// a fork/exec with captured output (what exec must do at least) and an exec
// of true through the session, and reports their p50s and ratios.
func benchExecVsBaseline(b *testing.B, srv *server.Server, s *control.Session) {
	raw := rawRoundTrip(b, srv)
	ctx := context.Background()
	var rawLat, fork, piped, ex latencies
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rawLat.time(raw)
		fork.time(func() {
			if err := exec.Command("true").Run(); err != nil {
				b.Fatal(err)
			}
		})
		piped.time(func() {
			var o, e bytes.Buffer
			c := exec.Command("true")
			c.Stdout, c.Stderr = &o, &e
			if err := c.Run(); err != nil {
				b.Fatal(err)
			}
		})
		ex.time(func() {
			r, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}})
			if err != nil || r.GetExitCode() != 0 {
				b.Fatal(r, err)
			}
		})
	}
	b.ReportMetric(float64(p50(rawLat).Nanoseconds()), "raw-p50-ns")
	b.ReportMetric(float64(p50(fork).Nanoseconds()), "fork-p50-ns")
	b.ReportMetric(float64(p50(piped).Nanoseconds()), "fork-captured-p50-ns")
	b.ReportMetric(float64(p50(ex).Nanoseconds()), "exec-p50-ns")
	b.ReportMetric(float64(p50(ex))/float64(p50(rawLat)+p50(fork)), "ratio")
	b.ReportMetric(float64(p50(ex))/float64(p50(rawLat)+p50(piped)), "ratio-vs-captured")
}

func TestMain(m *testing.M) { testbin.Main(m) }

// BenchmarkExecVsBaselineAgentProcess is BenchmarkExecVsBaseline with the
// agent in its own process (the real binary), as it runs on a machine: the
// in-process variant shares one Go scheduler between the NATS server, the
// control side and the agent.
func BenchmarkExecVsBaselineAgentProcess(b *testing.B) {
	bin := testbin.Agent(b, "", "") // once per run, not per b.N round
	srv := natstest.Start(b)
	agentCmd := exec.Command(bin, "run", "--nats-url", srv.ClientURL(), "--workspace-id", testWS, "--agent-id", testAgent,
		"--workspace-root", b.TempDir(), "--log-level", "error")
	if err := agentCmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { agentCmd.Process.Signal(os.Interrupt); agentCmd.Wait() })
	e := &env{srv: srv}
	s := e.session(b, nil)
	ctx := context.Background()
	natstest.Eventually(b, 10*time.Second, func() error {
		if !s.Ping(ctx) {
			return context.DeadlineExceeded
		}
		return nil
	})
	benchExecVsBaseline(b, srv, s)
}
