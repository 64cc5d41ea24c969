package control

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// progressLog records Progress calls and checks they are monotonic.
type progressLog struct {
	mu    sync.Mutex
	calls int
	done  int64
	total int64
	err   error
}

func (p *progressLog) fn(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if done < p.done && p.err == nil {
		p.err = fmt.Errorf("progress went back: %d after %d", done, p.done)
	}
	p.calls++
	p.done, p.total = done, total
}

func (p *progressLog) check(t *testing.T, wantDone, wantTotal int64) {
	t.Helper()
	if p.err != nil {
		t.Fatal(p.err)
	}
	if p.calls == 0 || p.done != wantDone || p.total != wantTotal {
		t.Fatalf("progress: %d calls, last (%d, %d), want (%d, %d)", p.calls, p.done, p.total, wantDone, wantTotal)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// onlyReader hides Len/WriterTo so the size is truly unknown.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func noPartFiles(t *testing.T, mock *mockAgent) {
	t.Helper()
	for _, k := range mock.keys() {
		if strings.Contains(k, ".opengeni-part-") {
			t.Fatalf("part file left behind: %s", k)
		}
	}
}

// A 20 MiB file through the mock, with the default chunking (1 MiB server).
func TestChunkedTransfer20MiB(t *testing.T) {
	f, s, ctx := sessionFixture(t)
	mock := f.mock
	const size = 20<<20 + 12345
	data := randomBytes(t, size)
	sum := sha256.Sum256(data)

	var wp progressLog
	n, err := s.WriteFileAll(ctx, "/workspace/big/blob.bin", bytes.NewReader(data), size, &TransferOptions{Progress: wp.fn})
	if err != nil || n != size {
		t.Fatalf("WriteFileAll = %d, %v", n, err)
	}
	wp.check(t, size, size)
	got, ok := mock.file("big/blob.bin")
	if !ok || sha256.Sum256(got) != sum {
		t.Fatal("the machine's bytes differ")
	}
	noPartFiles(t, mock)

	// The wire: the first write truncates and creates parents, the rest
	// append, every chunk fits the max payload, then one move onto the target.
	var writes []*agentpb.FsWriteRequest
	var move *agentpb.FsMoveRequest
	for _, r := range mock.requests() {
		if w := r.req.GetFsWrite(); w != nil {
			writes = append(writes, w)
		}
		if m := r.req.GetFsMove(); m != nil {
			move = m
		}
	}
	if len(writes) < 21 || writes[0].GetAppend() || !writes[0].GetCreateParents() {
		t.Fatalf("%d writes, first %v", len(writes), writes[0].GetAppend())
	}
	for i, w := range writes {
		if i > 0 && (!w.GetAppend() || w.GetCreateParents()) {
			t.Fatalf("write %d: append %v parents %v", i, w.GetAppend(), w.GetCreateParents())
		}
		if len(w.GetContent()) > int(DefaultMaxPayload)-TransferOverhead || w.GetPath() != writes[0].GetPath() {
			t.Fatalf("write %d: %d bytes to %s", i, len(w.GetContent()), w.GetPath())
		}
	}
	if !strings.HasPrefix(writes[0].GetPath(), "big/.blob.bin.opengeni-part-") {
		t.Fatalf("part path %q", writes[0].GetPath())
	}
	if move == nil || move.GetFrom() != writes[0].GetPath() || move.GetTo() != "big/blob.bin" || !move.GetOverwrite() {
		t.Fatalf("move = %v", move)
	}

	var rp progressLog
	var buf bytes.Buffer
	n, err = s.ReadFileAll(ctx, "/workspace/big/blob.bin", &buf, &TransferOptions{Progress: rp.fn})
	if err != nil || n != size || sha256.Sum256(buf.Bytes()) != sum {
		t.Fatalf("ReadFileAll = %d, %v (sha match %v)", n, err, sha256.Sum256(buf.Bytes()) == sum)
	}
	rp.check(t, size, size)
}

// A server with a 64 KiB max payload still moves files: chunks follow the
// connection's limit.
func TestChunkedTransferSmallMaxPayload(t *testing.T) {
	f, s, ctx := sessionFixture(t, natstest.MaxPayload(64*1024))
	mock := f.mock
	if got := s.MaxPayload(ctx); got != 64*1024 {
		t.Fatalf("MaxPayload = %d", got)
	}
	const size = 1<<20 + 777
	data := randomBytes(t, size)

	// The single-message ops refuse cleanly.
	_, err := s.WriteFile(ctx, "/workspace/f", data, nil)
	if ce := asError(t, err); !ce.PayloadTooLarge {
		t.Fatalf("WriteFile = %+v", ce)
	}

	n, err := s.WriteFileAll(ctx, "/workspace/f", onlyReader{bytes.NewReader(data)}, -1, nil)
	if err != nil || n != size {
		t.Fatalf("WriteFileAll = %d, %v", n, err)
	}
	if got, _ := mock.file("f"); !bytes.Equal(got, data) {
		t.Fatal("bytes differ")
	}
	largest := 0
	for _, r := range mock.requests() {
		largest = max(largest, len(r.req.GetFsWrite().GetContent()))
	}
	if largest != 64*1024-TransferOverhead {
		t.Fatalf("largest chunk %d", largest)
	}

	_, err = s.ReadFile(ctx, "/workspace/f", 0) // the reply would not fit
	if ce := asError(t, err); !ce.PayloadTooLarge {
		t.Fatalf("ReadFile = %v", err)
	}
	var buf bytes.Buffer
	if n, err := s.ReadFileAll(ctx, "/workspace/f", &buf, &TransferOptions{Concurrency: 3}); err != nil || n != size || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("ReadFileAll = %d, %v", n, err)
	}

	// ViewImage falls back to chunks for a big image.
	img := append([]byte{0x89, 0x50, 0x4E, 0x47}, data[:200<<10]...)
	if _, err := s.WriteFileAll(ctx, "/workspace/big.png", bytes.NewReader(img), int64(len(img)), nil); err != nil {
		t.Fatal(err)
	}
	im, err := s.ViewImage(ctx, "/workspace/big.png")
	if err != nil || im.MediaType != "image/png" || !bytes.Equal(im.Data, img) {
		t.Fatalf("ViewImage: %v", err)
	}
}

// Several ranged reads are in flight at once: the mock holds the first two
// ranged reads until both have arrived.
func TestReadFileAllConcurrent(t *testing.T) {
	f, s, ctx := sessionFixture(t)
	mock := f.mock
	data := randomBytes(t, 10*1000+5)
	mock.seed("/f", data)

	var mu sync.Mutex
	arrived := 0
	both := make(chan struct{})
	mock.setIntercept(func(r *agentpb.ControlRequest) *agentpb.ControlResponse {
		if r.GetFsRead().GetOffset() == 0 {
			return nil
		}
		mu.Lock()
		arrived++
		if arrived == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
			return nil
		case <-time.After(5 * time.Second):
			return agentErr("", agentpb.ErrorCode_ERROR_CODE_OS, "reads were not concurrent", false)
		}
	})
	var buf bytes.Buffer
	var p progressLog
	n, err := s.ReadFileAll(ctx, "/f", &buf, &TransferOptions{ChunkSize: 1000, Concurrency: 4, Progress: p.fn})
	if err != nil || n != int64(len(data)) || !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("ReadFileAll = %d, %v", n, err)
	}
	p.check(t, int64(len(data)), int64(len(data)))
	if p.calls != 11 {
		t.Fatalf("progress calls = %d", p.calls)
	}
}

// A failed chunked write leaves the destination as it was and no part file.
func TestWriteFileAllKeepsDestinationOnFailure(t *testing.T) {
	f, s, ctx := sessionFixture(t)
	mock := f.mock
	mock.seed("/dest.txt", []byte("old"))

	var appends int
	mock.setIntercept(func(r *agentpb.ControlRequest) *agentpb.ControlResponse {
		if r.GetFsWrite().GetAppend() {
			if appends++; appends == 3 {
				return agentErr("", agentpb.ErrorCode_ERROR_CODE_OS, "disk full", false)
			}
		}
		return nil
	})
	data := randomBytes(t, 10_000)
	n, err := s.WriteFileAll(ctx, "dest.txt", bytes.NewReader(data), int64(len(data)), &TransferOptions{ChunkSize: 1000})
	if ce := asError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_OS || n != 3000 {
		t.Fatalf("WriteFileAll = %d, %+v", n, ce)
	}
	if got := mock.fileText("dest.txt"); got != "old" {
		t.Fatalf("destination = %q", got)
	}
	noPartFiles(t, mock)
	mock.setIntercept(nil)

	// A source shorter than its declared size fails the same way.
	_, err = s.WriteFileAll(ctx, "dest.txt", bytes.NewReader(data[:500]), 1000, nil)
	if !errors.Is(err, io.ErrUnexpectedEOF) || mock.fileText("dest.txt") != "old" {
		t.Fatalf("short source: %v", err)
	}
	noPartFiles(t, mock)

	// A reader error too.
	_, err = s.WriteFileAll(ctx, "dest.txt", io.MultiReader(bytes.NewReader(data[:10]), errReader{}), -1, &TransferOptions{ChunkSize: 4})
	if err == nil || !strings.Contains(err.Error(), "read source") || mock.fileText("dest.txt") != "old" {
		t.Fatalf("reader error: %v", err)
	}
	noPartFiles(t, mock)

	// Bytes past the declared size are not read.
	if n, err := s.WriteFileAll(ctx, "dest.txt", bytes.NewReader(data), 100, nil); err != nil || n != 100 || mock.fileText("dest.txt") != string(data[:100]) {
		t.Fatalf("limited write = %d, %v", n, err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestChunkedEdgeCases(t *testing.T) {
	f, s, ctx := sessionFixture(t)
	mock := f.mock

	// Empty files.
	var p progressLog
	if n, err := s.WriteFileAll(ctx, "/workspace/empty", bytes.NewReader(nil), 0, &TransferOptions{Progress: p.fn}); err != nil || n != 0 {
		t.Fatalf("empty write = %d, %v", n, err)
	}
	p.check(t, 0, 0)
	if b, ok := mock.file("empty"); !ok || len(b) != 0 {
		t.Fatal("empty file not created")
	}
	var buf bytes.Buffer
	if n, err := s.ReadFileAll(ctx, "/workspace/empty", &buf, nil); err != nil || n != 0 {
		t.Fatalf("empty read = %d, %v", n, err)
	}

	// A missing file is the agent's NOT_FOUND.
	_, err := s.ReadFileAll(ctx, "/workspace/missing", &buf, nil)
	if ce := asError(t, err); !ce.OSNotFound {
		t.Fatalf("missing = %+v", ce)
	}

	// Not a file path.
	for _, p := range []string{"", "/workspace", "dir/", `C:\dir\`} {
		if _, err := s.WriteFileAll(ctx, p, bytes.NewReader(nil), 0, nil); err == nil {
			t.Fatalf("WriteFileAll(%q) succeeded", p)
		}
	}

	// The file changes size mid-transfer.
	mock.seed("/grow", randomBytes(t, 5000))
	mock.setIntercept(func(r *agentpb.ControlRequest) *agentpb.ControlResponse {
		if rd := r.GetFsRead(); rd != nil && rd.GetOffset() > 0 {
			return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_FsRead{FsRead: &agentpb.FsReadResponse{Content: make([]byte, rd.GetLength()), TotalSize: 9999}}}
		}
		return nil
	})
	_, err = s.ReadFileAll(ctx, "/grow", io.Discard, &TransferOptions{ChunkSize: 1000})
	if err == nil || !strings.Contains(err.Error(), "changed during the transfer") {
		t.Fatalf("changed file: %v", err)
	}

	// An agent that ignores the range and sends everything is accepted.
	whole := randomBytes(t, 3000)
	mock.setIntercept(func(r *agentpb.ControlRequest) *agentpb.ControlResponse {
		if r.GetFsRead() != nil {
			return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_FsRead{FsRead: &agentpb.FsReadResponse{Content: whole, TotalSize: 3000}}}
		}
		return nil
	})
	buf.Reset()
	if n, err := s.ReadFileAll(ctx, "/x", &buf, &TransferOptions{ChunkSize: 1000}); err != nil || n != 3000 || !bytes.Equal(buf.Bytes(), whole) {
		t.Fatalf("whole-file agent = %d, %v", n, err)
	}

	// A short chunk is an error.
	mock.setIntercept(func(r *agentpb.ControlRequest) *agentpb.ControlResponse {
		if rd := r.GetFsRead(); rd != nil && rd.GetOffset() > 0 {
			return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_FsRead{FsRead: &agentpb.FsReadResponse{Content: []byte("x"), TotalSize: 5000}}}
		}
		return nil
	})
	if _, err = s.ReadFileAll(ctx, "/grow", io.Discard, &TransferOptions{ChunkSize: 1000}); err == nil || !strings.Contains(err.Error(), "short read") {
		t.Fatalf("short chunk: %v", err)
	}
	mock.setIntercept(nil)

	// A writer error stops the transfer.
	if _, err := s.ReadFileAll(ctx, "/grow", failWriter{}, &TransferOptions{ChunkSize: 1000}); err == nil || !strings.Contains(err.Error(), "write") {
		t.Fatalf("writer error: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("pipe closed") }

func TestPartName(t *testing.T) {
	for in, prefix := range map[string]string{
		"/workspace/a/b.txt": "/workspace/a/.b.txt.opengeni-part-",
		"b.txt":              ".b.txt.opengeni-part-",
		`C:\Users\u\f.txt`:   `C:\Users\u\.f.txt.opengeni-part-`,
		"/tmp/x":             "/tmp/.x.opengeni-part-",
	} {
		got, err := partName(in)
		if err != nil || !strings.HasPrefix(got, prefix) || len(got) <= len(prefix) {
			t.Errorf("partName(%q) = %q, %v", in, got, err)
		}
	}
	a, _ := partName("x")
	b, _ := partName("x")
	if a == b {
		t.Fatal("part names repeat")
	}
}
