package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/harness"
)

// procStack is the deployment shape: a nats-server in its own process, the
// agent binary in its own process, the control side here.
type procStack struct {
	url      string
	agentPID int
	root     string
	session  *control.Session
	nc       *nats.Conn
}

var buildOnce sync.Map // binary name -> path

func buildBin(b *testing.B, pkg string) string {
	if p, ok := buildOnce.Load(pkg); ok {
		return p.(string)
	}
	dir, err := os.MkdirTemp("", "ogbench")
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		b.Fatalf("build %s: %v\n%s", pkg, err, out)
	}
	buildOnce.Store(pkg, bin)
	return bin
}

func startProcStack(b *testing.B) *procStack {
	natsBin := buildBin(b, "../cmd/harness")
	agentBin := buildBin(b, "../cmd/opengeni-agent")
	srvCmd := exec.Command(natsBin, harness.NATSServerCommand, "0")
	out, _ := srvCmd.StdoutPipe()
	if err := srvCmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srvCmd.Process.Signal(os.Interrupt); srvCmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		b.Fatalf("nats-server: %q %v", line, err)
	}
	url := "nats://" + strings.TrimSpace(strings.TrimPrefix(line, "ready "))

	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	// The instance is the token in the connection hello's subject.
	hellos, err := nc.SubscribeSync("agent." + testWS + "." + testAgent + ".connection.*.hello")
	if err != nil {
		b.Fatal(err)
	}
	nc.Flush()
	root := b.TempDir()
	agentCmd := exec.Command(agentBin, "run", "--nats-url", url, "--workspace-id", testWS, "--agent-id", testAgent,
		"--workspace-root", root, "--log-level", "error")
	if err := agentCmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { agentCmd.Process.Signal(os.Interrupt); agentCmd.Wait() })
	msg, err := hellos.NextMsg(20 * time.Second)
	if err != nil {
		b.Fatalf("no hello: %v", err)
	}
	inst := strings.Split(msg.Subject, ".")[4]
	hellos.Unsubscribe()
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: testWS, AgentID: testAgent,
		RPC: control.NewNATSRPC(control.StaticConn(nc)), Timeout: 60 * time.Second,
		Instances: control.InstanceResolverFunc(func(context.Context, string, string) (string, error) { return inst, nil })})
	if err != nil {
		b.Fatal(err)
	}
	return &procStack{url: url, agentPID: agentCmd.Process.Pid, root: root, session: s, nc: nc}
}

// peakRSS is the agent's VmHWM (peak resident set) in MiB.
func (p *procStack) peakRSS() float64 {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(p.agentPID) + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

// BenchmarkTransfer moves 100 MiB each way per iteration, legacy
// (ReadFileAll/WriteFileAll) and op-stream (ReadFileStream/WriteFileStream)
// in the same run, agent and nats-server each in their own process, with
// the floors beside them: raw NATS publish of 128 KiB frames through the
// same server, local write+fsync and read of the same file. MiB/s are
// reported as metrics; agent-peak-rss-* is the agent's VmHWM after the
// op-stream transfers and at the end (the legacy path runs after op-stream).
func BenchmarkTransfer(b *testing.B) {
	for _, size := range []int64{100 << 20, 1 << 30} {
		b.Run(strconv.FormatInt(size>>20, 10)+"MiB", func(b *testing.B) {
			if size > 100<<20 && testing.Short() {
				b.Skip("1 GiB in -short")
			}
			p := startProcStack(b)
			data := make([]byte, size)
			rand.Read(data)
			ctx := context.Background()
			path := filepath.Join(p.root, "file.bin")
			var legacyUp, legacyDown, streamUp, streamDown, rawPub, diskW, diskR time.Duration
			var streamRSS float64
			for i := 0; i < b.N; i++ {
				rawPub += timeIt(func() { rawPublish(b, p.url, size) })
				diskW += timeIt(func() {
					f, _ := os.Create(path + ".local")
					f.Write(data)
					f.Sync()
					f.Close()
				})
				diskR += timeIt(func() {
					f, _ := os.Open(path + ".local")
					io.Copy(io.Discard, f)
					f.Close()
				})
				streamUp += timeIt(func() {
					if n, err := p.session.WriteFileStream(ctx, path, bytes.NewReader(data), size, nil); err != nil || n != size {
						b.Fatal(n, err)
					}
				})
				streamDown += timeIt(func() {
					if n, err := p.session.ReadFileStream(ctx, path, io.Discard, &control.OpOptions{Window: 16 << 20}, nil); err != nil || n != size {
						b.Fatal(n, err)
					}
				})
			}
			streamRSS = p.peakRSS() // before the legacy path runs: op-stream's own peak
			if size <= 100<<20 {    // the legacy path is the baseline; 1 GiB of it is slow
				legacyUp += timeIt(func() {
					if n, err := p.session.WriteFileAll(ctx, path, bytes.NewReader(data), size, nil); err != nil || n != size {
						b.Fatal(n, err)
					}
				})
				legacyDown += timeIt(func() {
					if n, err := p.session.ReadFileAll(ctx, path, io.Discard, nil); err != nil || n != size {
						b.Fatal(n, err)
					}
				})
			}
			n := size * int64(b.N)
			b.ReportMetric(mibps(n, rawPub), "raw-nats-128k-MiB/s")
			b.ReportMetric(mibps(n, diskW), "disk-write-fsync-MiB/s")
			b.ReportMetric(mibps(n, diskR), "disk-read-MiB/s")
			if legacyUp > 0 {
				b.ReportMetric(mibps(n, legacyUp), "legacy-up-MiB/s")
				b.ReportMetric(mibps(n, legacyDown), "legacy-down-MiB/s")
			}
			b.ReportMetric(mibps(n, streamUp), "opstream-up-MiB/s")
			b.ReportMetric(mibps(n, streamDown), "opstream-down-MiB/s")
			b.ReportMetric(streamRSS, "agent-peak-rss-opstream-MiB")
			b.ReportMetric(p.peakRSS(), "agent-peak-rss-all-MiB")
		})
	}
}

func timeIt(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// rawPublish is the NATS floor: size bytes as 128 KiB messages from one
// connection to a subscriber on another, through the same server.
func rawPublish(b *testing.B, url string, size int64) {
	pub, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	sub, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	const frame = 128 << 10
	count := int((size + frame - 1) / frame)
	done := make(chan struct{})
	got := 0
	s, _ := sub.Subscribe("bench.raw", func(*nats.Msg) {
		got++
		if got == count {
			close(done)
		}
	})
	s.SetPendingLimits(-1, -1)
	sub.Flush()
	payload := make([]byte, frame)
	for range count {
		pub.Publish("bench.raw", payload)
	}
	pub.Flush()
	<-done
}

// BenchmarkExecStream: time to first byte of a streamed exec, and the
// throughput of `yes | head -c 1G` streamed to the control side.
func BenchmarkExecStream(b *testing.B) {
	p := startProcStack(b)
	ctx := context.Background()
	const total = 1 << 30
	var ttfb, whole time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		first := time.Duration(0)
		var n int64
		exit, err := p.session.ExecStream(ctx, control.ExecStreamOptions{
			ExecRequestOptions: control.ExecRequestOptions{Argv: []string{"sh", "-c", "yes | head -c " + strconv.Itoa(total)}},
			Stdout: writerFunc(func(b []byte) (int, error) {
				if first == 0 {
					first = time.Since(start)
				}
				n += int64(len(b))
				return len(b), nil
			}),
			Op: &control.OpOptions{Window: 16 << 20},
		})
		whole += time.Since(start)
		ttfb += first
		if err != nil || exit.GetExitCode() != 0 || n != total || exit.GetTotals()["stdout"] != total {
			b.Fatal(exit, err, n)
		}
	}
	b.ReportMetric(float64(ttfb.Microseconds())/float64(b.N), "ttfb-us")
	b.ReportMetric(mibps(total*int64(b.N), whole), "yes-1GiB-MiB/s")
	b.ReportMetric(p.peakRSS(), "agent-peak-rss-MiB")
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
