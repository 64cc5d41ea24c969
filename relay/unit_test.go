package relay

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func netListen() (net.Listener, error)           { return net.Listen("tcp", "127.0.0.1:0") }
func netListenAt(a string) (net.Listener, error) { return net.Listen("tcp", a) }

func seqs(es []ringEntry) []uint64 {
	out := []uint64{}
	for _, e := range es {
		out = append(out, e.seq)
	}
	return out
}

// §8.3 ring truths.
func TestRing(t *testing.T) {
	r := newRing(10)
	for i := range uint64(5) {
		r.push(ringEntry{seq: i})
	}
	if got := seqs(r.since(2)); !slices.Equal(got, []uint64{2, 3, 4}) {
		t.Fatalf("cap 10 from 2: %v", got)
	}
	r = newRing(3)
	depth := 0
	for i := range uint64(6) {
		depth = r.push(ringEntry{seq: i})
	}
	if depth != 3 || r.len() != 3 {
		t.Fatalf("depth %d len %d", depth, r.len())
	}
	if got := seqs(r.since(0)); !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Fatalf("cap 3 from 0: %v", got)
	}
	if got := r.since(99); len(got) != 0 {
		t.Fatalf("from 99: %v", got)
	}
	if newRing(0).cap != 1 {
		t.Fatal("capacity 0 must be treated as 1")
	}
	// Arrival order, not sorted.
	r = newRing(4)
	for _, s := range []uint64{5, 1, 7} {
		r.push(ringEntry{seq: s})
	}
	if got := seqs(r.since(0)); !slices.Equal(got, []uint64{5, 1, 7}) {
		t.Fatalf("order: %v", got)
	}
}

// §5 rate-limit truths.
func TestBucket(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := newBucket(1024, 0, t0)
	//lint:ignore SA4000 each admit takes from the bucket: the repeated call is the test
	if !b.admit(512, t0) || !b.admit(512, t0) || b.admit(1, t0) {
		t.Fatal("1024/0: admit 512+512 then shed 1")
	}
	b = newBucket(1000, 1000, t0)
	if !b.admit(1000, t0) || b.admit(1, t0) {
		t.Fatal("1000/1000: admit 1000, shed 1")
	}
	t1 := t0.Add(500 * time.Millisecond)
	if !b.admit(400, t1) || b.admit(200, t1) {
		t.Fatal("after 500ms: admit 400 then shed 200")
	}
	b = newBucket(100, 0, t0)
	if !b.admit(1<<20, t0) || b.admit(1, t0) {
		t.Fatal("capacity 100: an oversized frame passes once from full")
	}
}

// §8.3 metrics truths.
func TestMetricsText(t *testing.T) {
	var m Metrics
	m.BytesAgentToViewer.Add(10)
	m.ObserveDepth(7)
	m.ObserveDepth(3)
	m.LiveChannels.Add(1)
	var sb strings.Builder
	m.WriteText(&sb)
	for _, want := range []string{
		"opengeni_relay_bytes_agent_to_viewer_total 10\n",
		"opengeni_relay_buffer_high_water 7\n",
		"opengeni_relay_live_channels 1\n",
		"# HELP opengeni_relay_opens_rejected_total Channel opens rejected (bad token/scope/epoch).\n# TYPE opengeni_relay_opens_rejected_total counter\n",
		"# TYPE opengeni_relay_live_channels gauge\n",
	} {
		if !strings.Contains(sb.String(), want) {
			t.Fatalf("metrics text lacks %q:\n%s", want, sb.String())
		}
	}
}

// §8.3 config truths (cmd/relay maps env and flags onto Options).
func TestOptionsDefaults(t *testing.T) {
	o := DefaultOptions()
	o.StreamTokenSecret = "s"
	if o.AgentSecret() != "s" {
		t.Fatal("empty relay secret must fall back to the stream secret")
	}
	o.RelayTokenSecret = "r"
	if o.AgentSecret() != "r" {
		t.Fatal("an explicit relay secret wins")
	}

	d := DefaultOptions()
	if d.Bind != "0.0.0.0:8443" || d.RingFrames != 1024 || d.SpliceBuffer != 256 || d.RateBurstBytes != 16777216 ||
		d.RateBytesPerSec != 8388608 || d.PairTimeout != 120*time.Second {
		t.Fatalf("defaults %+v", d)
	}
	to := TestOptions("x")
	if to.Bind != "127.0.0.1:0" || to.RingFrames != 64 || to.RateBurstBytes != 1<<20 || to.PairTimeout != 5*time.Second {
		t.Fatalf("test options %+v", to)
	}
}
