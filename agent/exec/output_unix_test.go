//go:build unix

package exec

import (
	"bytes"
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// cutMarker is how the reply says a stream stopped being read early.
const cutMarker = "stopped reading after the command exited because a background process kept the stream open"

// TestExecDeliversOutputWrittenBeforeExit: a command that prints more than a
// pipe holds and exits at once must have every byte delivered, however late
// the reader gets to it. A 1 ns grace makes "late" certain: before the fix
// the pipes were closed that long after the exit, with up to a pipe's worth
// still unread: 2 of every 8 replies lacked 4-56 KiB of stdout, exit 0, no
// note.
func TestExecDeliversOutputWrittenBeforeExit(t *testing.T) {
	s, _ := newTestService(t, Options{PipeGrace: time.Nanosecond})
	const size = 1 << 20
	// The shell itself writes the last bytes (printf is a builtin) and
	// exits right after them; eight at once keep the readers busy.
	script := `head -c 1048576 /dev/zero | tr '\0' e >&2; i=0; while [ $i -lt 16384 ]; do printf ` +
		strings.Repeat("o", 64) + `; i=$((i+1)); done`
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{script}, Shell: true})
			if err != nil {
				t.Error(err)
				return
			}
			if len(resp.Stdout) != size || len(resp.Stderr) != size ||
				len(bytes.Trim(resp.Stdout, "o")) != 0 || len(bytes.Trim(resp.Stderr, "e")) != 0 {
				t.Errorf("run %d: stdout %d bytes, stderr %d bytes, want %d each and nothing else; stderr tail %q",
					i, len(resp.Stdout), len(resp.Stderr), size, tail(resp.Stderr, 200))
			}
		})
		if i%8 == 7 {
			wg.Wait()
		}
	}
}

// TestExecBackgroundOutputAfterExit: what a background child prints while
// it keeps printing is read (the idle timer restarts on every arrival);
// once it falls silent holding the pipe, reading stops and the reply says so.
func TestExecBackgroundOutputAfterExit(t *testing.T) {
	s, root := newTestService(t, Options{PipeGrace: time.Second})
	pidfile := filepath.Join(root.Dir, "pid")
	// The child prints three lines 100 ms apart (each well inside the grace)
	// after the shell exited, then sleeps holding stdout.
	script := fmt.Sprintf(`(for i in 1 2 3; do sleep 0.1; echo bg$i; done; exec sleep 30) & echo $! > %s; echo fg`, pidfile)
	resp, err := s.Exec(testCtx(t), &agentpb.ExecRequest{Command: []string{script}, Shell: true})
	if err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidfile)
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	if string(resp.Stdout) != "fg\nbg1\nbg2\nbg3\n" {
		t.Errorf("stdout = %q, want the command's and the background child's lines", resp.Stdout)
	}
	if !strings.Contains(string(resp.Stderr), "stdout cut") || !strings.Contains(string(resp.Stderr), cutMarker) {
		t.Errorf("stderr = %q, want a note that stdout was cut", resp.Stderr)
	}
	if resp.ExitCode != 0 || resp.TimedOut {
		t.Errorf("exit %d timed_out %v", resp.ExitCode, resp.TimedOut)
	}
}

// TestExecBackgroundWriterBoundedByTimeout: a background child that never
// stops printing cannot keep the exec alive past the command's deadline.
func TestExecBackgroundWriterBoundedByTimeout(t *testing.T) {
	s, root := newTestService(t, Options{PipeGrace: 100 * time.Millisecond})
	pidfile := filepath.Join(root.Dir, "pid")
	script := fmt.Sprintf(`(while :; do echo y; sleep 0.01; done) & echo $! > %s; echo fg`, pidfile)
	ctx := opctx.WithMaxReply(testCtx(t), 1<<16)
	resp, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{script}, Shell: true, TimeoutMs: 1000})
	if err != nil {
		t.Fatal(err)
	}
	pid := readPid(t, pidfile)
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	if !bytes.Contains(resp.Stdout, []byte("fg\n")) || !strings.Contains(string(resp.Stderr), cutMarker) {
		t.Errorf("stdout %.20q stderr %q, want fg and a cut note", resp.Stdout, resp.Stderr)
	}
}

// TestExecOutputIntegrityUnderLoad runs many short execs at once on a
// saturated host (a CPU hog per core, in this process and outside it) and
// checks every stdout byte for byte. A 1 ms grace would have lost output in
// most runs before the fix. OPENGENI_EXEC_STRESS sets the count (the issue's
// full size: 10000), OPENGENI_EXEC_STRESS_GRACE the grace (default 1ms).
func TestExecOutputIntegrityUnderLoad(t *testing.T) {
	total, inflight := 1000, 64
	if testing.Short() {
		total = 200
	}
	if v := os.Getenv("OPENGENI_EXEC_STRESS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("OPENGENI_EXEC_STRESS=%q: want a positive count", v)
		}
		total = n
	}
	grace := time.Millisecond
	if v := os.Getenv("OPENGENI_EXEC_STRESS_GRACE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("OPENGENI_EXEC_STRESS_GRACE=%q: want a positive duration", v)
		}
		grace = d
	}
	s, _ := newTestService(t, Options{PipeGrace: grace})
	stopHogs := saturate(t)
	defer stopHogs()

	var lost, cut atomic.Int64
	var firstBad sync.Once
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	ctx := t.Context() // bounded by go test -timeout: the full count outlasts testCtx
	for i := range total {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			want := fmt.Sprintf("n%d\n", i)
			resp, err := s.Exec(ctx, &agentpb.ExecRequest{Command: []string{"echo n" + strconv.Itoa(i)}, Shell: true})
			if err != nil || string(resp.GetStdout()) != want || resp.GetExitCode() != 0 {
				lost.Add(1)
				firstBad.Do(func() {
					t.Errorf("exec %d: stdout %q exit %d err %v, want %q", i, resp.GetStdout(), resp.GetExitCode(), err, want)
				})
			}
			if bytes.Contains(resp.GetStderr(), []byte(cutMarker)) {
				cut.Add(1)
			}
		})
	}
	wg.Wait()
	t.Logf("%d execs, %d in flight, grace %s: %d with wrong output, %d with a cut note", total, inflight, grace, lost.Load(), cut.Load())
	if lost.Load() > 0 {
		t.Errorf("%d of %d execs lost output", lost.Load(), total)
	}
}

// saturate keeps every core busy until the returned stop is called: one
// spinning goroutine (competing with the readers for this runtime) and one
// spinning process (competing for the CPU) per core.
func saturate(t *testing.T) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var hogs []*osexec.Cmd
	for range runtime.NumCPU() {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				if n%1_000_000 == 0 {
					runtime.Gosched()
				}
			}
		})
		hog := osexec.Command("sh", "-c", "while :; do :; done")
		if err := hog.Start(); err != nil {
			t.Fatalf("start CPU hog: %v", err)
		}
		hogs = append(hogs, hog)
	}
	return func() {
		cancel()
		for _, h := range hogs {
			h.Process.Kill()
			h.Wait()
		}
		wg.Wait()
	}
}
