package relay

import (
	"fmt"
	"io"
	"sync/atomic"
)

// Metrics are the relay's ten process-wide Prometheus metrics (relay.md §6).
type Metrics struct {
	BytesAgentToViewer atomic.Uint64
	BytesViewerToAgent atomic.Uint64
	FramesSpliced      atomic.Uint64
	OpensAccepted      atomic.Uint64
	OpensRejected      atomic.Uint64
	Reconnects         atomic.Uint64
	RateLimitDrops     atomic.Uint64
	BufferDrops        atomic.Uint64
	BufferHighWater    atomic.Uint64
	LiveChannels       atomic.Int64
}

// ObserveDepth raises the buffer high-water gauge to depth if it is higher.
func (m *Metrics) ObserveDepth(depth int) {
	d := uint64(depth)
	for {
		cur := m.BufferHighWater.Load()
		if d <= cur || m.BufferHighWater.CompareAndSwap(cur, d) {
			return
		}
	}
}

// WriteText renders the Prometheus text format, in the reference order.
func (m *Metrics) WriteText(w io.Writer) error {
	rows := []struct {
		name, typ, help string
		v               int64
	}{
		{"opengeni_relay_bytes_agent_to_viewer_total", "counter", "Bytes spliced from the agent to the viewer.", int64(m.BytesAgentToViewer.Load())},
		{"opengeni_relay_bytes_viewer_to_agent_total", "counter", "Bytes spliced from the viewer to the agent.", int64(m.BytesViewerToAgent.Load())},
		{"opengeni_relay_frames_spliced_total", "counter", "Frames spliced in either direction.", int64(m.FramesSpliced.Load())},
		{"opengeni_relay_opens_accepted_total", "counter", "Channel opens accepted.", int64(m.OpensAccepted.Load())},
		{"opengeni_relay_opens_rejected_total", "counter", "Channel opens rejected (bad token/scope/epoch).", int64(m.OpensRejected.Load())},
		{"opengeni_relay_reconnects_total", "counter", "Producer/consumer reconnects (resume opens).", int64(m.Reconnects.Load())},
		{"opengeni_relay_rate_limit_drops_total", "counter", "Frames shed by a per-token rate limit.", int64(m.RateLimitDrops.Load())},
		{"opengeni_relay_buffer_drops_total", "counter", "Frames dropped because a ring buffer was full.", int64(m.BufferDrops.Load())},
		{"opengeni_relay_buffer_high_water", "gauge", "Max buffered frames on any single channel direction.", int64(m.BufferHighWater.Load())},
		{"opengeni_relay_live_channels", "gauge", "Currently-live channels.", m.LiveChannels.Load()},
	}
	for _, r := range rows {
		if _, err := fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %d\n", r.name, r.help, r.name, r.typ, r.name, r.v); err != nil {
			return err
		}
	}
	return nil
}
