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

	var mu sync.Mutex
	seen := map[uint64]bool{}
	var published uint64
	var got bytes.Buffer
	byseq := map[uint64][]byte{}
	raw := natstest.Connect(t, f.srv)
	sub, err := raw.Subscribe(subject.Connection(testWS, testAgent, f.agent.Instance())+".op."+opID, func(m *nats.Msg) {
		var fr agentpb.OpFrame
		if proto.Unmarshal(m.Data, &fr) != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !seen[fr.GetSeq()] {
			seen[fr.GetSeq()] = true
			published += uint64(len(fr.GetData().GetBytes()))
			byseq[fr.GetSeq()] = fr.GetData().GetBytes()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	raw.Flush()

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
			mu.Lock()
			p := published
			mu.Unlock()
			if p < credit {
				return fmt.Errorf("%d of %d credited bytes published", p, credit)
			}
			next = query().GetNextSeq()
			mu.Lock()
			defer mu.Unlock()
			for seq := uint64(1); seq < next; seq++ {
				if !seen[seq] {
					return fmt.Errorf("frame %d not seen yet", seq)
				}
			}
			return nil
		})
		mu.Lock()
		defer mu.Unlock()
		if published != credit {
			t.Fatalf("credit %d, the agent published %d bytes", credit, published)
		}
		return next
	}
	ack := func(seq, credit uint64, final bool) {
		b, _ := proto.Marshal(&agentpb.OpAck{OpId: opID, AckedSeq: seq, CreditBytes: credit, Final: final})
		if err := raw.Publish(subject.Connection(testWS, testAgent, f.agent.Instance())+".ack", b); err != nil {
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
	natstest.Eventually(t, 20*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for seq := uint64(1); seq < next; seq++ {
			if !seen[seq] {
				return fmt.Errorf("frame %d not seen yet", seq)
			}
		}
		return nil
	})
	ack(next-1, 0, true)
	mu.Lock()
	defer mu.Unlock()
	for seq := uint64(1); seq < next; seq++ {
		got.Write(byseq[seq])
	}
	if !bytes.Equal(got.Bytes(), content) {
		t.Fatalf("the frames carry %d bytes, not the file's %d", got.Len(), len(content))
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
