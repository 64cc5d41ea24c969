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
	"syscall"
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
	natsPID  int
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
	srvCmd := exec.Command(natsBin, harness.NATSServerCommand, "-1") // -1: a random port (0 is 4222)
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
	return &procStack{url: url, agentPID: agentCmd.Process.Pid, natsPID: srvCmd.Process.Pid, root: root, session: s, nc: nc}
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

// BenchmarkTransfer moves a file each way per iteration, legacy
// (ReadFileAll/WriteFileAll with op-stream off) and op-stream
// (ReadFileStream/WriteFileStream) interleaved with their floors in the
// same run, agent and nats-server each in their own process: raw NATS
// publish of 128 KiB frames (download frame size) and of 512 KiB messages
// (upload chunk size) through the same server, local write+fsync and read
// of the same file. The machine is shared, so every phase of an iteration
// runs back to back and load1 is reported beside the MiB/s.
// agent-peak-rss-{up,down}-MiB is the peak RSS of a fresh agent process
// over one op-stream transfer (VmHWM).
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
			legacy := p.session.WithoutOpStream()
			t := phaseTimes{p: p}
			rssUp, rssDown := freshPeakRSS(b, data)
			for i := 0; i < b.N; i++ {
				t.add("raw-nats-128k", func() { rawPublish(b, p.url, size, 128<<10) })
				t.add("raw-nats-512k", func() { rawPublish(b, p.url, size, 512<<10) })
				t.add("disk-write-fsync", func() {
					f, _ := os.Create(path + ".local")
					f.Write(data)
					f.Sync()
					f.Close()
				})
				t.add("disk-read", func() {
					f, _ := os.Open(path + ".local")
					io.Copy(io.Discard, f)
					f.Close()
				})
				if size <= 100<<20 { // the legacy path is the baseline; 1 GiB of it is slow
					t.add("legacy-up", func() {
						if n, err := legacy.WriteFileAll(ctx, path, bytes.NewReader(data), size, nil); err != nil || n != size {
							b.Fatal(n, err)
						}
					})
				}
				t.add("opstream-up", func() {
					if n, err := p.session.WriteFileStream(ctx, path, bytes.NewReader(data), size, nil); err != nil || n != size {
						b.Fatal(n, err)
					}
				})
				if size <= 100<<20 {
					t.add("legacy-down", func() {
						if n, err := legacy.ReadFileAll(ctx, path, io.Discard, nil); err != nil || n != size {
							b.Fatal(n, err)
						}
					})
				}
				t.add("opstream-down", func() {
					if n, err := p.session.ReadFileStream(ctx, path, io.Discard, nil, nil); err != nil || n != size {
						b.Fatal(n, err)
					}
				})
			}
			t.report(b, size*int64(b.N))
			b.ReportMetric(rssUp, "agent-peak-rss-up-MiB")
			b.ReportMetric(rssDown, "agent-peak-rss-down-MiB")
			b.ReportMetric(load1(), "load1")
		})
	}
}

// phaseTimes sums the wall time of each named phase over the iterations,
// and the CPU time the agent, the nats-server and this process (the
// control side) spent in it: on a shared machine CPU per MiB is what the
// code costs, whatever the load did to the wall time.
type phaseTimes struct {
	p     *procStack
	names []string
	total map[string]time.Duration
	cpu   map[string][3]time.Duration
}

func (t *phaseTimes) add(name string, f func()) {
	if t.total == nil {
		t.total, t.cpu = map[string]time.Duration{}, map[string][3]time.Duration{}
	}
	if _, ok := t.total[name]; !ok {
		t.names = append(t.names, name)
	}
	before := t.p.cpuTimes()
	t.total[name] += timeIt(f)
	after := t.p.cpuTimes()
	c := t.cpu[name]
	for i := range c {
		c[i] += after[i] - before[i]
	}
	t.cpu[name] = c
}

func (t *phaseTimes) report(b *testing.B, bytes int64) {
	mib := float64(bytes) / (1 << 20)
	for _, n := range t.names {
		b.ReportMetric(mibps(bytes, t.total[n]), n+"-MiB/s")
		if strings.HasPrefix(n, "disk-") || strings.HasPrefix(n, "raw-") {
			continue
		}
		for i, who := range []string{"agent", "nats", "client"} {
			b.ReportMetric(float64(t.cpu[n][i].Microseconds())/1000/mib, n+"-cpu-"+who+"-ms/MiB")
		}
	}
}

// cpuTimes are the user+system CPU times so far of the agent, the
// nats-server and this process.
func (p *procStack) cpuTimes() [3]time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return [3]time.Duration{procCPU(p.agentPID), procCPU(p.natsPID), time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
}

// procCPU is a process's utime+stime from /proc/<pid>/stat (clock ticks
// of 10 ms).
func procCPU(pid int) time.Duration {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// freshPeakRSS is the peak RSS (MiB) of a fresh agent process over one
// op-stream upload of data, and of another over one download of it: what
// the transfer costs, not what earlier ones left in the heap.
func freshPeakRSS(b *testing.B, data []byte) (up, down float64) {
	ctx := context.Background()
	size := int64(len(data))
	p := startProcStack(b)
	if n, err := p.session.WriteFileStream(ctx, filepath.Join(p.root, "up.bin"), bytes.NewReader(data), size, nil); err != nil || n != size {
		b.Fatal(n, err)
	}
	up = p.peakRSS()
	p = startProcStack(b)
	path := filepath.Join(p.root, "down.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	if n, err := p.session.ReadFileStream(ctx, path, io.Discard, nil, nil); err != nil || n != size {
		b.Fatal(n, err)
	}
	return up, p.peakRSS()
}

// load1 is the machine's one-minute load average (0 where unknown).
func load1() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func timeIt(f func()) time.Duration {
	start := time.Now()
	f()
	return time.Since(start)
}

// rawPublish is the NATS floor: size bytes as frame-byte messages from
// one connection to a subscriber on another, through the same server.
func rawPublish(b *testing.B, url string, size int64, frame int) {
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
	count := int((size + int64(frame) - 1) / int64(frame))
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
// throughput of `yes | head -c 1G` streamed to the control side (default
// window), with the agent's peak RSS.
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

// BenchmarkOpStreamUpload is op-stream uploads of 100 MiB alone (to
// profile the agent process from outside: perf record -p).
func BenchmarkOpStreamUpload(b *testing.B) {
	p := startProcStack(b)
	data := make([]byte, 100<<20)
	rand.Read(data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		if n, err := p.session.WriteFileStream(context.Background(), filepath.Join(p.root, "up.bin"), bytes.NewReader(data), int64(len(data)), nil); err != nil || n != int64(len(data)) {
			b.Fatal(n, err)
		}
	}
}
