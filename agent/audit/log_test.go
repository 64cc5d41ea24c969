package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/testutil"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func openT(t testing.TB, o Options) *Log {
	t.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Close(ctx)
	})
	return l
}

func flushT(t testing.TB, l *Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatalf("flush: %v (status %q)", err, l.Status())
	}
}

func readAll(t testing.TB, dir string, f Filter) []Record {
	t.Helper()
	var out []Record
	if err := Read(dir, f, func(r Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func rec(i int) Record {
	return Record{Time: time.Unix(1700000000+int64(i), 0).UTC(), Event: "op", Op: "ping", RequestID: strconv.Itoa(i), Code: "OK"}
}

// Rotation keeps the newest records, in order, in at most MaxFiles files
// no bigger than MaxFileBytes, each owner-only.
func TestRotationKeepsTheNewestRecords(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, Options{Dir: dir, MaxFileBytes: 2048, MaxFiles: 3})
	const n = 300
	for i := range n {
		l.Append(rec(i))
	}
	flushT(t, l)
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("files %v, want 3", files)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 2048 || st.Size() == 0 {
			t.Fatalf("%s is %d bytes", f, st.Size())
		}
		if runtime.GOOS != "windows" && st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}
	got := readAll(t, dir, Filter{})
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("kept %d records", len(got))
	}
	first, _ := strconv.Atoi(got[0].RequestID)
	for i, r := range got {
		if r.RequestID != strconv.Itoa(first+i) {
			t.Fatalf("record %d is %s, want %d (newest, in order)", i, r.RequestID, first+i)
		}
	}
	if got[len(got)-1].RequestID != strconv.Itoa(n-1) {
		t.Fatalf("newest record %s, want %d", got[len(got)-1].RequestID, n-1)
	}
}

// A restarted agent appends after what the last one wrote.
func TestRestartContinuesTheLog(t *testing.T) {
	dir := t.TempDir()
	for round := range 3 {
		l, err := Open(Options{Dir: dir, MaxFileBytes: 1500, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			l.Append(rec(round*10 + i))
		}
		if err := l.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, dir, Filter{})
	if len(got) != 30 {
		t.Fatalf("%d records after restarts, want 30", len(got))
	}
	for i, r := range got {
		if r.RequestID != strconv.Itoa(i) {
			t.Fatalf("record %d is %s", i, r.RequestID)
		}
	}
}

// Concurrent appends all land, one well-formed line each.
func TestConcurrentAppendsAreWholeLines(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, Options{Dir: dir})
	var wg sync.WaitGroup
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				l.Append(rec(g*100 + i))
			}
		}()
	}
	wg.Wait()
	flushT(t, l)
	f, err := os.Open(LivePath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("malformed line %q: %v", sc.Text(), err)
		}
		seen[r.RequestID] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct records, want 1000", len(seen))
	}
}

// A disk that refuses writes (/dev/full) keeps the records queued and
// reports it; once the disk takes writes again every record is written.
func TestFullDiskLosesNothing(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	live := LivePath(dir)
	if err := os.Symlink("/dev/full", live); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	l := openT(t, Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for i := range 5 {
		l.Append(rec(i))
	}
	testutil.EventuallyTrue(t, 10*time.Second, "a failing disk to be reported", func() bool { return l.Status() != "" })
	if !logs.contains("cannot write") {
		t.Fatalf("the agent's log does not say the audit log cannot be written: %s", logs.String())
	}
	// The disk has room again.
	if err := os.Remove(live); err != nil {
		t.Fatal(err)
	}
	l.Append(rec(5))
	flushT(t, l)
	if l.Status() != "" {
		t.Fatalf("status after recovery %q", l.Status())
	}
	got := readAll(t, dir, Filter{})
	if len(got) != 6 {
		t.Fatalf("%d records after the disk recovered, want 6", len(got))
	}
	for i, r := range got {
		if r.RequestID != strconv.Itoa(i) {
			t.Fatalf("record %d is %s", i, r.RequestID)
		}
	}
}

// Follow sees records written after it started, across a rotation.
func TestFollowSeesNewRecordsAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, Options{Dir: dir, MaxFileBytes: 600, MaxFiles: 5})
	l.Append(rec(0))
	flushT(t, l)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Record, 100)
	done := make(chan error, 1)
	go func() {
		done <- Follow(ctx, dir, Filter{}, 20*time.Millisecond, func(r Record) error { got <- r; return nil })
	}()
	want := 0
	expect := func() {
		t.Helper()
		select {
		case r := <-got:
			if r.RequestID != strconv.Itoa(want) {
				t.Fatalf("followed %s, want %d", r.RequestID, want)
			}
			want++
		case <-time.After(10 * time.Second):
			t.Fatalf("record %d never followed", want)
		}
	}
	expect()
	for i := 1; i <= 8; i++ { // ~150 bytes each: rotates every few records
		l.Append(rec(i))
		flushT(t, l)
		expect()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestFilter(t *testing.T) {
	now := time.Now()
	r := Record{Time: now, Event: "op", Op: "exec", Connection: "abcdef0123456789", Workspace: "ws-1", Agent: "ag-1"}
	for _, tc := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Op: "exec"}, true},
		{Filter{Op: "fs_read"}, false},
		{Filter{Connection: "abcd"}, true},
		{Filter{Connection: "ws-1"}, true},
		{Filter{Connection: "ag-1"}, true},
		{Filter{Connection: "zzz"}, false},
		{Filter{Since: now.Add(-time.Hour)}, true},
		{Filter{Since: now.Add(time.Minute)}, false},
	} {
		if got := tc.f.Match(&r); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.f, got, tc.want)
		}
	}
	p := Record{Event: "pause", Time: now}
	if !(Filter{Op: "pause"}).Match(&p) {
		t.Error("--op pause does not select pause events")
	}
}

func TestRedactSecrets(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Authorization: Bearer abcdefgh12345678", "Authorization: Bearer [redacted]"},
		{"ogr_abcdefghijklmnop", "ogr_[redacted]"},
		{"https://user:hunter2hunter2@example.com/x", "https://user:[redacted]@example.com/x"},
		{"ls -la /tmp", "ls -la /tmp"},
	} {
		if got := RedactSecrets(tc.in); got != tc.want {
			t.Errorf("RedactSecrets(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Every op type's key arguments, and nothing secret.
func TestOpRecordArguments(t *testing.T) {
	conn := Connection{ID: "c1", Workspace: "ws", Agent: "ag", Platform: "https://api.example"}
	start := time.Now()
	for _, tc := range []struct {
		name  string
		req   *agentpb.ControlRequest
		resp  *agentpb.ControlResponse
		check func(*Args) error
	}{
		{"exec", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_Exec{Exec: &agentpb.ExecRequest{
			Command: []string{"env"}, Cwd: "/w", Env: map[string]string{"B": "v1", "A": "v2"}, Stdin: []byte("in")}}},
			&agentpb.ControlResponse{Result: &agentpb.ControlResponse_Exec{Exec: &agentpb.ExecResponse{ExitCode: 3, Stdout: []byte("out")}}},
			func(a *Args) error {
				if a.Argv[0] != "env" || a.Cwd != "/w" || fmt.Sprint(a.EnvKeys) != "[A B]" || a.StdinBytes != 2 || *a.ExitCode != 3 {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"fs_write", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_FsWrite{FsWrite: &agentpb.FsWriteRequest{Path: "p", Content: make([]byte, 7), Append: true}}}, nil,
			func(a *Args) error {
				if a.Path != "p" || a.Bytes != 7 || !a.Append {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"desktop_input", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_DesktopInput{DesktopInput: &agentpb.DesktopInputRequest{
			Event: &agentpb.DesktopInputRequest_Key{Key: &agentpb.KeyEvent{Key: "héllo", IsText: true}}}}}, nil,
			func(a *Args) error {
				if a.Input.Kind != "key" || a.Input.Chars != 5 || a.Input.Key != "" || a.Text != "" {
					return fmt.Errorf("%+v", a.Input)
				}
				return nil
			}},
		{"pty_write", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_PtyWrite{PtyWrite: &agentpb.PtyWriteRequest{PtyId: "p1", Data: []byte("secret")}}}, nil,
			func(a *Args) error {
				if a.PtyID != "p1" || a.Bytes != 6 || a.Text != "" {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"op_start exec", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_OpStart{OpStart: &agentpb.OpStart{Op: &agentpb.OpStart_Exec{Exec: &agentpb.ExecRequest{
			Command: []string{"make", "test"}, Cwd: "/w", Env: map[string]string{"TOKEN": "s3cret"}, Stdin: []byte("in")}}}}}, nil,
			func(a *Args) error {
				if a.Starts != "exec" || fmt.Sprint(a.Argv) != "[make test]" || a.Cwd != "/w" || fmt.Sprint(a.EnvKeys) != "[TOKEN]" || a.StdinBytes != 2 {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"op_start fs_read", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_OpStart{OpStart: &agentpb.OpStart{Op: &agentpb.OpStart_FsRead{FsRead: &agentpb.FsReadRequest{
			Path: "big.bin", Offset: 4, Length: 9}}}}}, nil,
			func(a *Args) error {
				if a.Starts != "fs_read" || a.Path != "big.bin" || a.Offset != 4 || a.Length != 9 {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"op_start fs_write", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_OpStart{OpStart: &agentpb.OpStart{Op: &agentpb.OpStart_FsWrite{FsWrite: &agentpb.FsWriteBegin{
			Path: "out.bin"}}}}}, nil,
			func(a *Args) error {
				if a.Starts != "fs_write" || a.Path != "out.bin" {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"write_chunk", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_WriteChunk{WriteChunk: &agentpb.WriteChunk{
			OpId: "op1", Seq: 3, Offset: 1024, Bytes: []byte("contents"), Last: true}}}, nil,
			func(a *Args) error {
				if a.OpID != "op1" || a.Seq != 3 || a.Offset != 1024 || a.Bytes != 8 || !a.Last {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"op_attach", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_OpAttach{OpAttach: &agentpb.OpAttach{OpId: "op1", FromSeq: 7}}}, nil,
			func(a *Args) error {
				if a.OpID != "op1" || a.Seq != 7 {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
		{"op_cancel", &agentpb.ControlRequest{Op: &agentpb.ControlRequest_OpCancel{OpCancel: &agentpb.OpCancel{OpId: "op1"}}}, nil,
			func(a *Args) error {
				if a.OpID != "op1" {
					return fmt.Errorf("%+v", a)
				}
				return nil
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := opRecord(conn, false, tc.req, tc.resp, tc.name, start, time.Millisecond, 10, 20)
			if b, err := json.Marshal(r); err != nil || bytes.Contains(b, []byte("s3cret")) || bytes.Contains(b, []byte("contents")) {
				t.Fatalf("record %s (%v) holds a secret", b, err)
			}
			if r.Connection != "c1" || r.Platform != "https://api.example" || r.Code != "OK" || r.BytesIn != 10 || r.BytesOut != 20 || r.DurationMs != 1 {
				t.Fatalf("record %+v", r)
			}
			if err := tc.check(r.Args); err != nil {
				t.Fatal(err)
			}
		})
	}
	// With input recording on, typed text is kept.
	r := opRecord(conn, true, &agentpb.ControlRequest{Op: &agentpb.ControlRequest_PtyWrite{PtyWrite: &agentpb.PtyWriteRequest{Data: []byte("ls\n")}}}, nil, "pty_write", start, 0, 0, 0)
	if r.Args.Text != "ls\n" {
		t.Fatalf("recorded input %q", r.Args.Text)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}

func (s *syncBuffer) contains(sub string) bool { return strings.Contains(s.String(), sub) }
