package opstream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/zeebo/blake3"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// rawRPC sends ControlRequests to the machine's instance as they are (the
// tests choose request ids and chunk order).
type rawRPC struct {
	t   *testing.T
	nc  *nats.Conn
	rpc string
}

func (f *fixture) raw(t *testing.T) *rawRPC {
	return &rawRPC{t: t, nc: natstest.Connect(t, f.srv), rpc: subject.Connection(testWS, testAgent, f.agent.Instance()) + ".rpc"}
}

func (r *rawRPC) send(req *agentpb.ControlRequest) *agentpb.ControlResponse {
	r.t.Helper()
	b, _ := proto.Marshal(req)
	msg, err := r.nc.Request(r.rpc, b, 20*time.Second)
	if err != nil {
		r.t.Fatal(err)
	}
	var resp agentpb.ControlResponse
	if err := proto.Unmarshal(msg.Data, &resp); err != nil {
		r.t.Fatal(err)
	}
	return &resp
}

func (r *rawRPC) begin(id string, w *agentpb.FsWriteBegin) {
	r.t.Helper()
	resp := r.send(&agentpb.ControlRequest{RequestId: id, Op: &agentpb.ControlRequest_OpStart{OpStart: &agentpb.OpStart{Op: &agentpb.OpStart_FsWrite{FsWrite: w}}}})
	if !resp.GetOpStart().GetAccepted() {
		r.t.Fatalf("begin: %v", resp)
	}
}

func (r *rawRPC) chunk(c *agentpb.WriteChunk) *agentpb.ControlResponse {
	return r.send(&agentpb.ControlRequest{RequestId: c.OpId + "-chunk", Op: &agentpb.ControlRequest_WriteChunk{WriteChunk: c}})
}

func digest(b []byte) string {
	h := blake3.New()
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// Chunks in any order, each possibly twice, make exactly the file; the
// target appears only with the last chunk's verdict.
func TestChunksOutOfOrderAndRepeated(t *testing.T) {
	f := start(t)
	r := f.raw(t)
	content := make([]byte, 5*100<<10+123)
	rand.Read(content)
	target := filepath.Join(f.root, "sub", "out.bin")
	r.begin("w1", &agentpb.FsWriteBegin{Path: target, CreateParents: true})
	const size = 100 << 10
	var chunks []*agentpb.WriteChunk
	for i := 0; i*size < len(content); i++ {
		end := min((i+1)*size, len(content))
		chunks = append(chunks, &agentpb.WriteChunk{OpId: "w1", Seq: uint64(i + 1), Offset: uint64(i * size), Bytes: content[i*size : end], Last: end == len(content)})
	}
	last := chunks[len(chunks)-1]
	// Out of order, one repeated, the last before some others.
	for _, i := range []int{2, 0, 2, 4} {
		if resp := r.chunk(chunks[i]); resp.GetWriteChunk().GetSeq() != chunks[i].Seq {
			t.Fatalf("chunk %d: %v", chunks[i].Seq, resp)
		}
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("target exists before the last chunk: %v", err)
	}
	verdict := make(chan *agentpb.ControlResponse, 1)
	go func() { verdict <- r.chunk(last) }()
	for _, i := range []int{3, 1, 3} {
		r.chunk(chunks[i])
	}
	if resp := <-verdict; resp.GetError() != nil {
		t.Fatalf("last chunk: %v", resp)
	}
	got, err := os.ReadFile(target)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("file differs (%d vs %d bytes): %v", len(got), len(content), err)
	}
	// A retried last chunk after the commit is the same verdict, idempotent.
	if resp := r.chunk(last); resp.GetError() != nil {
		t.Fatalf("repeated last chunk: %v", resp)
	}
	assertNoTempFiles(t, filepath.Dir(target))
}

// A write whose base digest does not match the file is refused: the file
// keeps its content and no temp file is left.
func TestChunkedWriteBaseDigestMismatchRenamesNothing(t *testing.T) {
	f := start(t)
	r := f.raw(t)
	target := filepath.Join(f.root, "base.txt")
	if err := os.WriteFile(target, []byte("someone else's change\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, base string
		ok         bool
	}{
		{"wrong", digest([]byte("the content I read\n")), false},
		{"right", digest([]byte("someone else's change\n")), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "w-" + tc.name
			r.begin(id, &agentpb.FsWriteBegin{Path: target, ExpectedBaseDigest: tc.base})
			resp := r.chunk(&agentpb.WriteChunk{OpId: id, Seq: 1, Bytes: []byte("mine\n"), Last: true})
			got, _ := os.ReadFile(target)
			if tc.ok {
				if resp.GetError() != nil || string(got) != "mine\n" {
					t.Fatalf("matching base: %v, file %q", resp, got)
				}
				return
			}
			if e := resp.GetError(); e == nil || e.GetDetail()["reason"] != "base_digest_mismatch" || !strings.Contains(e.GetMessage(), "nothing was renamed") {
				t.Fatalf("mismatching base: %v", resp)
			}
			if string(got) != "someone else's change\n" {
				t.Fatalf("the file changed: %q", got)
			}
			st := r.send(&agentpb.ControlRequest{RequestId: "q-" + id, Op: &agentpb.ControlRequest_OpQuery{OpQuery: &agentpb.OpQuery{OpId: id}}})
			if st.GetOpStatus().GetExit().GetFailureCode() != "DIGEST_MISMATCH" {
				t.Fatalf("op status: %v", st)
			}
			assertNoTempFiles(t, f.root)
		})
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temp file left behind: %s", e.Name())
		}
	}
}

// Whole files both ways through the control library: byte-equal, digests
// checked end to end.
func TestFileRoundTripOverOpStream(t *testing.T) {
	f := start(t)
	s := f.session(t)
	ctx := context.Background()
	content := make([]byte, 9<<20+77)
	rand.Read(content)
	n, err := s.WriteFileStream(ctx, "big.bin", bytes.NewReader(content), int64(len(content)), nil)
	if err != nil || n != int64(len(content)) {
		t.Fatalf("upload: %d %v", n, err)
	}
	if got, _ := os.ReadFile(filepath.Join(f.root, "big.bin")); !bytes.Equal(got, content) {
		t.Fatal("uploaded file differs")
	}
	var down bytes.Buffer
	if n, err := s.ReadFileStream(ctx, "big.bin", &down, nil, nil); err != nil || n != int64(len(content)) {
		t.Fatalf("download: %d %v", n, err)
	}
	if !bytes.Equal(down.Bytes(), content) {
		t.Fatal("downloaded file differs")
	}
	var empty bytes.Buffer
	if _, err := s.WriteFileStream(ctx, "empty", &empty, 0, nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(f.root, "empty")); err != nil || fi.Size() != 0 {
		t.Fatalf("empty upload: %v %v", fi, err)
	}
}
