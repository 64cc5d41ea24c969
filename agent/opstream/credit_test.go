package opstream_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// frameWatch subscribes beside the consumer to the ops' frames (subj may
// be a wildcard) and records each seq once: the data it carried and the
// total published.
type frameWatch struct {
	mu        sync.Mutex
	data      map[uint64][]byte
	published uint64
}

func watchFrames(t testing.TB, f *fixture, subj string) *frameWatch {
	t.Helper()
	w := &frameWatch{data: map[uint64][]byte{}}
	raw := natstest.Connect(t, f.srv)
	sub, err := raw.Subscribe(subject.Connection(testWS, testAgent, f.agent.Instance())+".op."+subj, func(m *nats.Msg) {
		var fr agentpb.OpFrame
		if proto.Unmarshal(m.Data, &fr) != nil {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, dup := w.data[fr.GetSeq()]; !dup {
			w.data[fr.GetSeq()] = fr.GetData().GetBytes()
			w.published += uint64(len(fr.GetData().GetBytes()))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := raw.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *frameWatch) bytesPublished() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.published
}

// seenBefore says whether every frame before next reached the watcher.
func (w *frameWatch) seenBefore(next uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for seq := uint64(1); seq < next; seq++ {
		if _, ok := w.data[seq]; !ok {
			return fmt.Errorf("frame %d not seen yet", seq)
		}
	}
	return nil
}

// content is the data of the frames before next, in seq order.
func (w *frameWatch) content(next uint64) []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b bytes.Buffer
	for seq := uint64(1); seq < next; seq++ {
		b.Write(w.data[seq])
	}
	return b.Bytes()
}

// A slow consumer of a file read holds the agent to its credit, round after
// round: the consumer here is the raw wire (it grants credit by hand), and
// a subscriber beside it sees exactly the credit's worth of data published,
// never more, however long the agent waits; what the agent retains for the
// consumer is bounded the same way.
func TestSlowFileConsumerHoldsAgentToCredit(t *testing.T) {
	f := start(t)
	content := make([]byte, 4<<20)
	rand.Read(content)
	if err := os.WriteFile(filepath.Join(f.root, "slow.bin"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	const window = 200 << 10 // not a multiple of the frame size: the last frame of a grant is cut to fit
	const opID = "slow-consumer-op"

	w := watchFrames(t, f, opID)

	r := f.raw(t)
	resp := r.send(&agentpb.ControlRequest{RequestId: opID, Op: &agentpb.ControlRequest_OpStart{OpStart: &agentpb.OpStart{
		WindowBytes: window, Op: &agentpb.OpStart_FsRead{FsRead: &agentpb.FsReadRequest{Path: "slow.bin"}}}}})
	if !resp.GetOpStart().GetAccepted() {
		t.Fatalf("op_start: %v", resp)
	}
	query := func() *agentpb.OpStatus {
		return r.send(&agentpb.ControlRequest{RequestId: fmt.Sprint(time.Now().UnixNano()),
			Op: &agentpb.ControlRequest_OpQuery{OpQuery: &agentpb.OpQuery{OpId: opID}}}).GetOpStatus()
	}
	// settle waits until the agent stopped at credit: every frame it made
	// (before next_seq) reached the subscriber, and it made credit's worth.
	settle := func(credit uint64) uint64 {
		t.Helper()
		var next uint64
		natstest.Eventually(t, 20*time.Second, func() error {
			if p := w.bytesPublished(); p < credit {
				return fmt.Errorf("%d of %d credited bytes published", p, credit)
			}
			next = query().GetNextSeq()
			return w.seenBefore(next)
		})
		if p := w.bytesPublished(); p != credit {
			t.Fatalf("credit %d, the agent published %d bytes", credit, p)
		}
		return next
	}
	ack := func(seq, credit uint64, final bool) {
		b, _ := proto.Marshal(&agentpb.OpAck{OpId: opID, AckedSeq: seq, CreditBytes: credit, Final: final})
		if err := r.nc.Publish(subject.Connection(testWS, testAgent, f.agent.Instance())+".ack", b); err != nil {
			t.Fatal(err)
		}
	}

	credit := uint64(window)
	for round := range 4 {
		next := settle(credit)
		if st := query(); st.GetState() != agentpb.OpState_OP_STATE_RUNNING {
			t.Fatalf("round %d: op %v before the file was sent", round, st.GetState())
		}
		credit += window
		ack(next-1, credit, false) // the consumer took everything so far
	}
	ack(0, uint64(len(content))+window, false)
	natstest.Eventually(t, 20*time.Second, func() error {
		if st := query(); st.GetState() != agentpb.OpState_OP_STATE_COMPLETE {
			return fmt.Errorf("op %v", st.GetState())
		}
		return nil
	})
	next := query().GetNextSeq()
	natstest.Eventually(t, 20*time.Second, func() error { return w.seenBefore(next) })
	ack(next-1, 0, true)
	if got := w.content(next); !bytes.Equal(got, content) {
		t.Fatalf("the frames carry %d bytes, not the file's %d", len(got), len(content))
	}
}

// seededStream is a deterministic byte stream (the same seed gives the
// same bytes), so a gigabyte is checked without holding it.
func seededStream(seed uint64) io.Reader {
	var key [32]byte
	key[0] = byte(seed)
	return mrand.NewChaCha8(key)
}

// streamCompare is a writer that checks what it gets against a stream.
type streamCompare struct {
	want io.Reader
	buf  []byte
	n    int64
	diff int64 // first differing offset, -1 when none
}

func (c *streamCompare) Write(b []byte) (int, error) {
	if cap(c.buf) < len(b) {
		c.buf = make([]byte, len(b))
	}
	w := c.buf[:len(b)]
	io.ReadFull(c.want, w)
	if c.diff < 0 && !bytes.Equal(w, b) {
		c.diff = c.n
	}
	c.n += int64(len(b))
	return len(b), nil
}

// A 1 GiB file goes up in chunks and comes back byte-equal (skipped with
// -short: it writes a gigabyte).
func TestGiBFileRoundTripOverOpStream(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB round trip in -short")
	}
	f := start(t)
	s := f.session(t)
	ctx := context.Background()
	const size = 1 << 30
	n, err := s.WriteFileStream(ctx, "gib.bin", io.LimitReader(seededStream(7), size), size, nil)
	if err != nil || n != size {
		t.Fatalf("upload: %d %v", n, err)
	}
	file, err := os.Open(filepath.Join(f.root, "gib.bin"))
	if err != nil {
		t.Fatal(err)
	}
	onDisk := &streamCompare{want: seededStream(7), diff: -1}
	_, err = io.Copy(onDisk, file)
	file.Close()
	if err != nil || onDisk.n != size || onDisk.diff >= 0 {
		t.Fatalf("on the machine: %d bytes, first difference at %d, %v", onDisk.n, onDisk.diff, err)
	}
	down := &streamCompare{want: seededStream(7), diff: -1}
	if n, err := s.ReadFileStream(ctx, "gib.bin", down, nil, nil); err != nil || n != size {
		t.Fatalf("download: %d %v", n, err)
	}
	if down.n != size || down.diff >= 0 {
		t.Fatalf("downloaded %d bytes, first difference at %d", down.n, down.diff)
	}
}
