package relay

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/internal/natstest"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

// benchClientEnv switches the test binary into a client process for the idle
// channel memory benchmark, so the relay's process measures only itself.
const benchClientEnv = "RELAY_BENCH_IDLE_CLIENTS"

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchClientEnv); spec != "" {
		os.Exit(runIdleClients(spec))
	}
	code := m.Run()
	if code == 0 {
		code = checkNoLeaks()
	}
	os.Exit(code)
}

// checkNoServerGoroutines fails the run if relay goroutines outlive their
// servers (every test closes its Server in Cleanup).
func checkNoServerGoroutines() int {
	deadline := time.Now().Add(waitFor)
	for {
		buf := make([]byte, 1<<20)
		dump := string(buf[:runtime.Stack(buf, true)])
		leaked := []string{}
		for _, g := range strings.Split(dump, "\n\n") {
			if strings.Contains(g, "relay.(*Server)") || strings.Contains(g, "relay.(*registry)") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return 0
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "leaked relay goroutines:\n%s\n", strings.Join(leaked, "\n\n"))
			return 1
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runIdleClients dials n agents (one channel each), prints "ready", and
// holds the sockets until stdin closes.
func runIdleClients(spec string) int {
	base, nStr, _ := strings.Cut(spec, ",")
	n, _ := strconv.Atoi(nStr)
	tok := agentToken(nil)
	conns := make([]*websocket.Conn, 0, n)
	ctx := context.Background()
	for i := range n {
		port := uint32(10000 + i)
		c, _, err := websocket.Dial(ctx, base+keyQuery(port), nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		open := &agentpb.StreamOpen{Channel: chanKey(port, fmt.Sprintf("ch-%d", port)), Token: tok, Role: agentpb.StreamRole_STREAM_ROLE_AGENT}
		if err := frame.WriteFrame(ctx, c, open); err != nil {
			fmt.Fprintln(os.Stderr, "open:", err)
			return 1
		}
		if tag, m, err := frame.ReadFrame(ctx, c); err != nil || tag != frame.TagOpenAck || !m.(*agentpb.StreamOpenAck).Accepted {
			fmt.Fprintln(os.Stderr, "ack:", tag, m, err)
			return 1
		}
		go func() { // answer pings
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		}()
		conns = append(conns, c)
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.CloseNow()
	}
	return 0
}

// benchPair is a producer and a consumer connected either through one relay
// channel or directly (producer dials a WebSocket server that is the consumer).
type benchPair struct {
	prod, cons *websocket.Conn
	close      func()
}

func relayPair(b *testing.B) benchPair {
	e := newEnv(b, unlimited)
	return pairOn(b, e, e, 7681)
}

func unlimited(o *Options) { o.RateBurstBytes, o.RateBytesPerSec = 1<<50, 1<<50 }

// pairOn attaches the agent of port's channel on relay a and its viewer on relay v.
func pairOn(b *testing.B, a, v *env, port uint32) benchPair {
	agent := newPeer(b, a.dial(keyQuery(port)), false)
	agent.write(agentOpen(b, port, 0))
	frame.ReadFrame(context.Background(), agent.c)
	viewer := newPeer(b, v.dial(keyQuery(port)), false)
	viewer.write(viewerOpen(b, viewerClaims(0, port), 0))
	frame.ReadFrame(context.Background(), viewer.c)
	return benchPair{prod: agent.c, cons: viewer.c, close: func() {}}
}

// replicaPairs returns, in one NATS-backed setup, a channel whose agent and
// viewer sit on one replica and a channel whose ends sit on two (the
// viewer's frames cross NATS), for same-run comparisons.
func replicaPairs(b *testing.B) (one, two benchPair) {
	ns := natstest.Start(b)
	ra := replicaEnv(b, ns, unlimited)
	rb := replicaEnv(b, ns, unlimited)
	one, two = pairOn(b, ra, ra, 7681), pairOn(b, ra, rb, 6080)
	if rb.srv.Metrics().OpensAccepted.Load() != 0 {
		b.Fatal("the viewer on replica B must be proxied to A")
	}
	return one, two
}

func directPair(b *testing.B) benchPair {
	got := make(chan *websocket.Conn, 1)
	done := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, acceptOptions)
		if err != nil {
			return
		}
		c.SetReadLimit(frame.MaxMessageSize)
		got <- c
		<-done
	}))
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		b.Fatal(err)
	}
	c.SetReadLimit(frame.MaxMessageSize)
	srv := <-got
	return benchPair{prod: c, cons: srv, close: func() { c.CloseNow(); srv.CloseNow(); close(done); ts.Close() }}
}

// BenchmarkThroughput: agent → viewer through one relay channel, against a
// direct WebSocket between the same two kinds of endpoint (producer client →
// consumer server). Both run in the same benchmark, alternating in bursts of
// 256 frames so they see the same machine load; the metrics are MB/s of each
// and relay/direct. 8 KiB frames are the PTY pump's read size; 64 KiB stands
// for desktop frames. At most 128 frames are in flight.
func BenchmarkThroughput(b *testing.B) {
	for _, size := range []int{8 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			dir := directPair(b)
			defer dir.close()
			throughputs(b, size, relayPair(b), dir, "relay", "direct")
		})
	}
}

// BenchmarkReplicaThroughput: agent → viewer for a channel whose ends sit
// on two replicas (frames cross NATS) against one whose ends share a
// replica, same run, alternating bursts; MB/s of each and two/one.
func BenchmarkReplicaThroughput(b *testing.B) {
	for _, size := range []int{8 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			one, two := replicaPairs(b)
			throughputs(b, size, two, one, "two-replicas", "one-replica")
		})
	}
}

// throughputs pushes size-byte frames through pair x and the baseline y,
// alternating bursts of 256 so both see the same machine load, and reports
// the MB/s of each and x/y.
func throughputs(b *testing.B, size int, x, y benchPair, xName, yName string) {
	xf, yf := newFlow(b, x, size), newFlow(b, y, size)
	var xT, yT time.Duration
	b.SetBytes(int64(size))
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += 256 {
		n := min(256, b.N-sent)
		xT += xf.burst(b, n)
		yT += yf.burst(b, n)
	}
	b.StopTimer()
	mb := func(d time.Duration) float64 { return float64(b.N) * float64(size) / d.Seconds() / 1e6 }
	b.ReportMetric(mb(xT), xName+"-MB/s")
	b.ReportMetric(mb(yT), yName+"-MB/s")
	b.ReportMetric(mb(xT)/mb(yT), xName+"/"+yName)
}

// flow pushes frames from a pair's producer to its consumer with a window.
type flow struct {
	p      benchPair
	data   []byte
	credit chan struct{}
	got    chan struct{}
	seq    uint64
}

func newFlow(b *testing.B, p benchPair, size int) *flow {
	const window = 128
	f := &flow{p: p, data: make([]byte, size), credit: make(chan struct{}, window), got: make(chan struct{}, 1<<16)}
	for range window {
		f.credit <- struct{}{}
	}
	go func() {
		for {
			if _, _, err := p.cons.Read(context.Background()); err != nil {
				return
			}
			f.credit <- struct{}{}
			f.got <- struct{}{}
		}
	}()
	return f
}

// burst sends n frames and waits until all have arrived.
func (f *flow) burst(b *testing.B, n int) time.Duration {
	t0 := time.Now()
	for range n {
		<-f.credit
		if err := frame.WriteFrame(context.Background(), f.p.prod, &agentpb.StreamFrame{ChannelId: "ch-7681", Seq: f.seq, Data: f.data}); err != nil {
			b.Fatal(err)
		}
		f.seq++
	}
	for range n {
		<-f.got
	}
	return time.Since(t0)
}

// BenchmarkRoundTrip: a 16-byte frame from the viewer to the agent and back
// (the agent echoes), through the relay and, in the same run, over a direct
// WebSocket echo. Reports p50/p99 of both and the relay's added p50.
func BenchmarkRoundTrip(b *testing.B) {
	rel, dir := relayPair(b), directPair(b)
	defer dir.close()
	roundTrips(b, rel, dir, "relay", "direct")
}

// BenchmarkReplicaRoundTrip: a 16-byte frame viewer → agent → viewer for a
// channel whose ends sit on two replicas (both legs cross NATS) against one
// whose ends share a replica, interleaved in the same run.
func BenchmarkReplicaRoundTrip(b *testing.B) {
	one, two := replicaPairs(b)
	roundTrips(b, two, one, "two-replicas", "one-replica")
}

// roundTrips measures echo round trips through pair x and the baseline y,
// interleaved, and reports p50/p99 of both and x's added p50.
func roundTrips(b *testing.B, x, y benchPair, xName, yName string) {
	echo := func(c *websocket.Conn) {
		for {
			tag, m, err := frame.ReadFrame(context.Background(), c)
			if err != nil {
				return
			}
			if tag == frame.TagFrame && frame.WriteFrame(context.Background(), c, m) != nil {
				return
			}
		}
	}
	// Viewer (cons) sends; agent (prod) echoes.
	go echo(x.prod)
	go echo(y.prod)
	msg := &agentpb.StreamFrame{ChannelId: "ch-7681", Data: []byte("0123456789abcdef")}
	rtt := func(send, recv *websocket.Conn) time.Duration {
		t0 := time.Now()
		if err := frame.WriteFrame(context.Background(), send, msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := frame.ReadFrame(context.Background(), recv); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	relayD := make([]time.Duration, 0, b.N)
	directD := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ { // interleaved so both see the same machine load
		relayD = append(relayD, rtt(x.cons, x.cons))
		directD = append(directD, rtt(y.cons, y.cons))
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(float64(len(d))*p))].Nanoseconds()) / 1e3
	}
	rp50, rp99, dp50, dp99 := pct(relayD, .50), pct(relayD, .99), pct(directD, .50), pct(directD, .99)
	b.ReportMetric(rp50, xName+"-p50-µs")
	b.ReportMetric(rp99, xName+"-p99-µs")
	b.ReportMetric(dp50, yName+"-p50-µs")
	b.ReportMetric(dp99, yName+"-p99-µs")
	b.ReportMetric(rp50-dp50, "added-p50-µs")
}

// BenchmarkIdleChannelMemory: the relay's memory per idle channel (an agent
// attached, nothing flowing) for 10,000 channels. The clients live in a child
// process so this process measures the relay alone (heap in use + stacks).
func BenchmarkIdleChannelMemory(b *testing.B) {
	const channels = 10000
	for i := 0; i < b.N; i++ {
		e := newEnv(b, func(o *Options) { o.RingFrames = 1024 })
		before, hb, sb := memInUse()
		g0 := runtime.NumGoroutine()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), benchClientEnv+"="+e.base+","+strconv.Itoa(channels))
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		if line != "ready\n" {
			cmd.Process.Kill()
			b.Fatalf("client process: %q", line)
		}
		eventually(b, "all channels live", func() bool { return e.srv.Metrics().LiveChannels.Load() == channels })
		after, ha, sa := memInUse()
		goroutines := runtime.NumGoroutine() - g0
		if path := os.Getenv("RELAY_HEAP_PROFILE"); path != "" {
			f, _ := os.Create(path)
			pprof.WriteHeapProfile(f)
			f.Close()
		}
		stdin.Close()
		cmd.Wait()
		b.ReportMetric(float64(after-before)/channels, "bytes/channel")
		b.ReportMetric(float64(goroutines)/channels, "goroutines/channel")
		b.ReportMetric(float64(ha-hb)/channels, "heap-bytes/channel")
		b.ReportMetric(float64(sa-sb)/channels, "stack-bytes/channel")
		eventually(b, "channels gone", func() bool { return e.srv.Metrics().LiveChannels.Load() == 0 })
	}
}

func memInUse() (total, heap, stack uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse, ms.HeapInuse, ms.StackInuse
}
