package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
	"github.com/opengeni/opengeni-agent/internal/testutil"
	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// Terminals end to end: a real relay on loopback, a real agent with real
// PTYs (registered with the relay by agent/stream), and viewers speaking the
// relay wire format (control.StreamViewer, the one `relay ctl shell` uses).

const (
	relayStreamSecret = "e2e-stream-secret"
	relayAgentSecret  = "e2e-agent-secret"
)

// startTestRelay runs a real relay on loopback that can be restarted on the
// same address, with the e2e secrets.
func startTestRelay(t testing.TB) *streamtest.Relay {
	t.Helper()
	return streamtest.StartRelay(t, func(o *relay.Options) {
		o.StreamTokenSecret = relayStreamSecret
		o.RelayTokenSecret = relayAgentSecret
	})
}

// withRelay points the agent at r with a valid ogr_ token.
func withRelay(t testing.TB, r *streamtest.Relay) func(*agent.Options) {
	tok, err := token.MintAgent(relayAgentSecret, token.AgentClaims{WorkspaceID: testWS, AgentID: testAgent}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return func(o *agent.Options) { o.RelayURL, o.RelayToken = r.URL(), tok }
}

type termEnv struct {
	*env
	relay *streamtest.Relay
	sess  *control.Session
}

func newTermEnv(t testing.TB) *termEnv {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("PTY end-to-end tests need a unix shell")
	}
	r := startTestRelay(t)
	e := newEnv(t, nil, withRelay(t, r))
	sess := e.session(t, func(c *control.SessionConfig) {
		c.Relay = control.ParseRelayURL(r.URL())
		c.Epoch = 3
	})
	return &termEnv{env: e, relay: r, sess: sess}
}

func (e *termEnv) open(t testing.TB, o control.PtyOptions) *control.Terminal {
	t.Helper()
	if o.Command == nil {
		o.Command = []string{"/bin/sh"}
	}
	if o.Env == nil {
		o.Env = map[string]string{"PS1": "$ ", "ENV": ""}
	}
	term, err := e.sess.OpenTerminal(ctxT(t), control.TerminalOptions{PtyOptions: o, StreamSecret: []byte(relayStreamSecret)})
	if err != nil {
		t.Fatalf("OpenTerminal: %v", err)
	}
	t.Cleanup(term.Detach)
	return term
}

// screen collects a terminal's output.
type screen struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	wake   chan struct{}
	ended  chan struct{}
	paused chan struct{} // non-nil: the reader waits (the output backs up)
}

func watch(out <-chan []byte) *screen {
	s := &screen{wake: make(chan struct{}, 1), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		for b := range out {
			s.mu.Lock()
			p := s.paused
			s.mu.Unlock()
			if p != nil {
				<-p
			}
			s.mu.Lock()
			s.buf.Write(b)
			s.mu.Unlock()
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

func (s *screen) bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.buf.Bytes())
}

func (s *screen) pause() {
	s.mu.Lock()
	s.paused = make(chan struct{})
	s.mu.Unlock()
}

func (s *screen) resume() {
	s.mu.Lock()
	p := s.paused
	s.paused = nil
	s.mu.Unlock()
	if p != nil {
		close(p)
	}
}

func (s *screen) waitFor(t testing.TB, what string, pred func([]byte) bool) []byte {
	t.Helper()
	end := time.NewTimer(30 * time.Second)
	defer end.Stop()
	for {
		if b := s.bytes(); pred(b) {
			return b
		}
		select {
		case <-s.wake:
		case <-time.After(20 * time.Millisecond):
		case <-end.C:
			b := s.bytes()
			t.Fatalf("timed out waiting for %s; %d bytes, tail %q", what, len(b), b[max(0, len(b)-300):])
		}
	}
}

func (s *screen) waitContains(t testing.TB, sub string) []byte {
	t.Helper()
	return s.waitFor(t, strconv.Quote(sub), func(b []byte) bool { return bytes.Contains(b, []byte(sub)) })
}

func send(t testing.TB, term *control.Terminal, s string) {
	t.Helper()
	if err := term.Send(ctxT(t), []byte(s)); err != nil {
		t.Fatalf("send %q: %v", s, err)
	}
}

// A command typed by the viewer runs exactly once and its output arrives.
func TestTerminalTypedCommandRunsOnce(t *testing.T) {
	e := newTermEnv(t)
	term := e.open(t, control.PtyOptions{Cwd: e.root})
	scr := watch(term.Output())
	if term.PtyID == "" || term.Channel.GetChannelId() != term.PtyID || term.Channel.GetPort() != control.TerminalStreamPort {
		t.Fatalf("terminal = %q %v", term.PtyID, term.Channel)
	}
	// The result is computed by the shell, so the echo of the typed line
	// cannot satisfy the wait.
	send(t, term, "echo ran-$((40+2)) >> once.txt; echo out-$((6*7))\r")
	scr.waitContains(t, "out-42\r\n")
	// Input is ordered: a duplicate of the command would have run before
	// this marker's output arrives.
	send(t, term, "echo marker-$((7*7))\r")
	scr.waitContains(t, "marker-49\r\n")
	got, err := os.ReadFile(filepath.Join(e.root, "once.txt"))
	if err != nil || string(got) != "ran-42\n" {
		t.Fatalf("once.txt = %q, %v; want the command to have run exactly once", got, err)
	}
	if n := bytes.Count(scr.bytes(), []byte("out-42\r\n")); n != 1 {
		t.Fatalf("output line seen %d times", n)
	}
}

// The relay restarts in the middle of `seq 1 100000`: the PTY survives, the
// viewer reconnects with resume_from_seq and every line arrives exactly
// once, in order.
func TestTerminalRelayRestartLosesNothing(t *testing.T) {
	e := newTermEnv(t)
	term := e.open(t, control.PtyOptions{Cwd: e.root})
	scr := watch(term.Output())
	send(t, term, "echo pid-$$-x\r")
	// Wait for the prompt too: typed-ahead input is echoed by the tty before
	// the shell prints its prompt, which would land the prompt in the output.
	before := regexp.MustCompile(`pid-(\d+)-x\r\n`).FindSubmatch(scr.waitFor(t, "pid and prompt", func(b []byte) bool {
		return regexp.MustCompile(`pid-\d+-x\r\n\$ `).Match(b)
	}))

	const n = 100000
	start := len(scr.bytes())
	// Stop reading once 64 KiB of the run arrived: the rest backs up in
	// the relay and the agent while the relay dies under it.
	scr.mu.Lock()
	scr.buf.Grow(1 << 20)
	scr.mu.Unlock()
	send(t, term, "seq 1 "+strconv.Itoa(n)+"; echo END-$((1+1))\r")
	scr.waitFor(t, "64 KiB of seq", func(b []byte) bool { return len(b)-start > 64<<10 })
	scr.pause()
	e.relay.Restart()
	// Resume only once the fresh relay took an open: the agent's
	// re-registration (the paused viewer's reader is blocked on its full
	// output queue and cannot reconnect before it is read again).
	streamtest.Eventually(t, "the agent re-registered", func() bool { return e.relay.Server().Metrics().OpensAccepted.Load() >= 1 })
	scr.resume()
	// And once more while the viewer is reading.
	scr.waitFor(t, "256 KiB of seq", func(b []byte) bool { return len(b)-start > 256<<10 })
	e.relay.Restart()
	out := scr.waitContains(t, "END-2\r\n")[start:]

	// Each number once, in order: the lines after the echoed command line
	// up to END-2.
	i := bytes.Index(out, []byte("END-$((1+1))\r\n"))
	j := bytes.Index(out, []byte("END-2\r\n"))
	if i < 0 || j < i {
		t.Fatalf("command echo or END not found")
	}
	body := out[i+len("END-$((1+1))\r\n") : j]
	var want bytes.Buffer
	for k := 1; k <= n; k++ {
		fmt.Fprintf(&want, "%d\r\n", k)
	}
	if !bytes.Equal(body, want.Bytes()) {
		lines := strings.Split(string(body), "\r\n")
		t.Fatalf("seq output: %d bytes, want %d (%d lines, first %q, last %q)", len(body), want.Len(),
			len(lines), lines[:min(3, len(lines))], lines[max(0, len(lines)-3):])
	}
	st := term.Stream.Stats()
	t.Logf("viewer: %d connects, %d frames, %d bytes, %d duplicates dropped, %d gaps", st.Connects, st.Frames, st.Bytes, st.Duplicates, st.Gaps)
	if st.Connects < 2 || st.Gaps != 0 {
		t.Fatalf("viewer stats %+v: want a reconnect and no gap", st)
	}

	// The same PTY (same shell process) still serves input.
	send(t, term, "echo pid-$$-x; echo alive-$((3*3))\r")
	after := scr.waitContains(t, "alive-9\r\n")
	if !bytes.Contains(after[start:], before[0]) {
		t.Fatalf("shell pid changed across the relay restart (was %s)", before[1])
	}
}

// Input typed while the relay is down is delivered after the reconnect,
// once; input sent before the restart is not run again by the new relay.
func TestTerminalInputAcrossRelayRestartRunsOnce(t *testing.T) {
	e := newTermEnv(t)
	term := e.open(t, control.PtyOptions{Cwd: e.root})
	scr := watch(term.Output())
	send(t, term, "echo a-$((1+1)) >> log.txt; echo first-$((2*2))\r")
	scr.waitContains(t, "first-4\r\n")

	e.relay.Stop()
	// Typed once the viewer knows the relay is gone (a keystroke written
	// into the dying socket itself has no ack and is lost, never repeated).
	testutil.EventuallyTrue(t, 10*time.Second, "the viewer to notice the relay stopped", func() bool { return !term.Stream.Connected() })
	sent := make(chan error, 1)
	sending := make(chan struct{})
	go func() {
		close(sending)
		sent <- term.Send(ctxT(t), []byte("echo b-$((1+2)) >> log.txt; echo second-$((3*3))\r"))
	}()
	<-sending
	select {
	case err := <-sent:
		t.Fatalf("Send returned %v with no relay to take the input", err)
	default:
	}
	e.relay.Restart() // stopped above: starts a fresh relay on the same address
	if err := <-sent; err != nil {
		t.Fatalf("send across the restart: %v", err)
	}
	scr.waitContains(t, "second-9\r\n")
	send(t, term, "echo third-$((4*4))\r")
	// Input is ordered: a replayed b would have run before third's output.
	scr.waitContains(t, "third-16\r\n")
	got, err := os.ReadFile(filepath.Join(e.root, "log.txt"))
	if err != nil || string(got) != "a-2\nb-3\n" {
		t.Fatalf("log.txt = %q, %v; want each command once", got, err)
	}
}

// Two viewers on one terminal see the same output; only the controlling
// viewer's input reaches the PTY.
func TestTerminalTwoViewersSeeTheSameOutput(t *testing.T) {
	e := newTermEnv(t)
	a := e.open(t, control.PtyOptions{Cwd: e.root})
	scrA := watch(a.Output())
	b, err := e.sess.AttachTerminal(ctxT(t), a.PtyID, a.Channel, control.TerminalOptions{
		StreamSecret: []byte(relayStreamSecret), Mode: control.StreamModeView,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Detach)
	scrB := watch(b.Output())

	send(t, a, "echo two-$((2+3))\r")
	scrA.waitContains(t, "two-5\r\n")
	scrB.waitContains(t, "two-5\r\n")
	send(t, b, "echo from-view-only-$((1+1))\r") // a view-mode viewer's input is not taken
	send(t, a, "echo three-$((1+2))\r")
	scrA.waitContains(t, "three-3\r\n")
	scrB.waitContains(t, "three-3\r\n")
	// Up to a final marker both viewers saw the same bytes (the prompt
	// after it may still be on its way to one of them).
	const marker = "mark-25\r\n"
	send(t, a, "echo mark-$((5*5))\r")
	outA, outB := scrA.waitContains(t, marker), scrB.waitContains(t, marker)
	outA = outA[:bytes.Index(outA, []byte(marker))+len(marker)]
	outB = outB[:bytes.Index(outB, []byte(marker))+len(marker)]
	if !bytes.Equal(outA, outB) {
		t.Fatalf("viewers differ:\nA %q\nB %q", outA, outB)
	}
	if bytes.Contains(outB, []byte("from-view-only-2")) {
		t.Fatalf("a view-mode viewer's input reached the PTY: %q", outB)
	}
}

// pty_close returns the exit code: of a process that exited on its own, and
// of one ended by the close (hang-up).
func TestTerminalCloseReturnsExitCode(t *testing.T) {
	e := newTermEnv(t)
	term := e.open(t, control.PtyOptions{Cwd: e.root})
	scr := watch(term.Output())
	send(t, term, "exit 7\r")
	select {
	case <-scr.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end after the shell exited")
	}
	var closed *control.StreamClosedError
	if err := term.Stream.Err(); err == nil || !errors.As(err, &closed) || closed.Reason.String() != "STREAM_CLOSE_REASON_PROCESS_EXIT" {
		t.Fatalf("stream end = %v, want PROCESS_EXIT", err)
	}
	code, err := term.Close(ctxT(t))
	if err != nil || code != 7 {
		t.Fatalf("pty_close = %d, %v; want 7", code, err)
	}

	live := e.open(t, control.PtyOptions{Command: []string{"/bin/sh", "-c", "echo up; sleep 100"}})
	watch(live.Output()).waitContains(t, "up")
	code, err = live.Close(ctxT(t))
	if err != nil || code != 128+1 {
		t.Fatalf("pty_close of a running sleep = %d, %v; want 129 (SIGHUP)", code, err)
	}
	if _, err := e.sess.PtyClose(ctxT(t), live.PtyID); err == nil {
		t.Fatal("a second pty_close succeeded; want NOT_FOUND")
	}
}

// Resize reaches the PTY (stty sees it).
func TestTerminalResize(t *testing.T) {
	e := newTermEnv(t)
	term := e.open(t, control.PtyOptions{Cols: 100, Rows: 30})
	scr := watch(term.Output())
	send(t, term, "stty size; echo sz-$((1))\r")
	scr.waitContains(t, "30 100\r\n")
	if err := term.Resize(ctxT(t), 132, 43); err != nil {
		t.Fatal(err)
	}
	send(t, term, "stty size\r")
	scr.waitContains(t, "43 132\r\n")
}

// Hello reports pty only when a relay is configured.
func TestTerminalCapabilityFollowsRelay(t *testing.T) {
	e := newTermEnv(t)
	if !e.agent.Hello().GetCapabilities().GetPty() {
		t.Fatal("pty=false with a relay")
	}
	plain := newEnv(t, nil, nil)
	if plain.agent.Hello().GetCapabilities().GetPty() {
		t.Fatal("pty=true without a relay")
	}
	_, err := plain.session(t, nil).PtyOpen(ctxT(t), control.PtyOptions{})
	if err == nil || !strings.Contains(err.Error(), "pty_open") {
		t.Fatalf("pty_open without a relay: %v", err)
	}
}

// BenchmarkTerminalEchoLatency: one keystroke viewer → relay → agent → PTY
// (cat in raw mode echoes it) → agent → relay → viewer.
func BenchmarkTerminalEchoLatency(b *testing.B) {
	e := newTermEnv(b)
	term := e.open(b, control.PtyOptions{Command: []string{"/bin/sh", "-c", "stty raw -echo && echo ready && exec cat"}})
	out := term.Output()
	var seen bytes.Buffer
	for !bytes.Contains(seen.Bytes(), []byte("ready")) {
		seen.Write(<-out)
	}
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	key := []byte("x")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if err := term.Send(ctx, key); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < 1; {
			d, ok := <-out
			if !ok {
				b.Fatal("stream ended")
			}
			got += bytes.Count(d, key)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkPTYEchoDirect is the baseline of BenchmarkTerminalEchoLatency:
// the same keystroke echo through a local PTY, no agent and no relay.
func BenchmarkPTYEchoDirect(b *testing.B) {
	if runtime.GOOS == "windows" {
		b.Skip("unix PTY")
	}
	cmd := exec.Command("/bin/sh", "-c", "stty raw -echo && echo ready && exec cat")
	f, err := pty.Start(cmd)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { f.Close(); cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 4096)
	var seen bytes.Buffer
	for !bytes.Contains(seen.Bytes(), []byte("ready")) {
		n, err := f.Read(buf)
		if err != nil {
			b.Fatal(err)
		}
		seen.Write(buf[:n])
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.Write([]byte("x")); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < 1; {
			n, err := f.Read(buf)
			if err != nil {
				b.Fatal(err)
			}
			got += bytes.Count(buf[:n], []byte("x"))
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
