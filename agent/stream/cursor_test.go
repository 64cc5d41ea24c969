package stream

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/internal/backoff"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
)

// scriptedRelay acks every open and then sends the frames of its script for
// that connection (by index), recording each presented resume_from_seq.
type scriptedRelay struct {
	mu      sync.Mutex
	resumes []uint64
	scripts [][]*agentpb.StreamFrame
	keep    bool // keep the last connection open
}

func (s *scriptedRelay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	_, m, err := frame.ReadFrame(ctx, c)
	if err != nil {
		return
	}
	open := m.(*agentpb.StreamOpen)
	s.mu.Lock()
	i := len(s.resumes)
	s.resumes = append(s.resumes, open.ResumeFromSeq)
	s.mu.Unlock()
	frame.WriteFrame(ctx, c, &agentpb.StreamOpenAck{Accepted: true, ResumeFromSeq: open.ResumeFromSeq})
	if i >= len(s.scripts) {
		c.Read(ctx) // idle until the agent goes away
		return
	}
	for _, f := range s.scripts[i] {
		frame.WriteFrame(ctx, c, f)
	}
	if i == len(s.scripts)-1 && s.keep {
		c.Read(ctx)
	}
	// Otherwise: drop the socket (a relay teardown).
}

func fr(seq uint64, data string) *agentpb.StreamFrame {
	return &agentpb.StreamFrame{Seq: seq, Data: []byte(data)}
}

// The receive cursor: presented on every reconnect, duplicates below it are
// dropped, and a connection whose input sequence restarted (a new relay)
// rebases it instead of dropping real input.
func TestReceiveCursorDedupesAndRebases(t *testing.T) {
	sr := &scriptedRelay{keep: true, scripts: [][]*agentpb.StreamFrame{
		{fr(0, "a0"), fr(1, "a1"), fr(2, "a2")},
		{fr(3, "b3"), fr(4, "b4"), fr(3, "dup"), fr(5, "b5")},
		{fr(0, "c0"), fr(1, "c1")},
	}}
	srv := httptest.NewServer(sr)
	defer srv.Close()
	d := &Dialer{RelayURL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/stream", Token: "ogr_x",
		WorkspaceID: "ws", AgentID: "ag", Backoff: backoff.Exponential(time.Millisecond, 10*time.Millisecond)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := d.Open(ctx, agentpb.StreamKind_STREAM_KIND_PTY, PortPTY)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, "")
	var got []string
	for _, want := range []string{"a0", "a1", "a2", "b3", "b4", "b5", "c0", "c1"} {
		select {
		case b := <-ch.Recv():
			got = append(got, string(b))
			if string(b) != want {
				t.Fatalf("got %v, want %q next", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("timed out after %v", got)
		}
	}
	sr.mu.Lock()
	resumes := append([]uint64(nil), sr.resumes[:3]...)
	sr.mu.Unlock()
	if resumes[0] != 0 || resumes[1] != 3 || resumes[2] != 6 {
		t.Fatalf("presented resumes %v, want [0 3 6]", resumes)
	}
	if s := ch.Stats(); s.Dropped != 1 {
		t.Fatalf("dropped %d, want 1", s.Dropped)
	}
}

func TestReplayBufferBounds(t *testing.T) {
	r := replayBuf{maxBytes: 10, maxFrames: 3}
	for i := range 5 {
		r.push(replayEntry{seq: uint64(i), size: 2})
	}
	if e := r.entries(); len(e) != 3 || e[0].seq != 2 || e[2].seq != 4 {
		t.Fatalf("frames bound: %v", e)
	}
	r.push(replayEntry{seq: 5, size: 7})
	if e := r.entries(); len(e) != 2 || e[0].seq != 4 || e[1].seq != 5 || r.bytes != 9 {
		t.Fatalf("bytes bound: %v bytes %d", e, r.bytes)
	}
	r.push(replayEntry{seq: 6, size: 100}) // larger than the bound: kept alone
	if e := r.entries(); len(e) != 1 || e[0].seq != 6 {
		t.Fatalf("oversized: %v", e)
	}
}
