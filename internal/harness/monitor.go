package harness

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// EventKind is what an agent announced.
type EventKind string

// The announcements the monitor records.
const (
	EventHeartbeat    = EventKind("heartbeat")
	EventHello        = EventKind("hello")
	EventGoingOffline = EventKind("going_offline")
)

// Event is one announcement as received by the monitor.
type Event struct {
	Agent string
	Kind  EventKind
	At    time.Time
	Seq   uint64 // heartbeat sequence
}

// Monitor subscribes to every agent's events and hello subjects of one
// workspace and keeps what arrived, so scenarios can measure heartbeat gaps,
// reconnect times and GoingOffline.
type Monitor struct {
	nc *nats.Conn

	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced on every event
}

// NewMonitor connects to url (reconnecting quickly and forever, so it rides
// out the chaos scenarios' restarts) and subscribes.
func NewMonitor(url, workspace string) (*Monitor, error) {
	m := &Monitor{changed: make(chan struct{})}
	nc, err := nats.Connect(url,
		nats.Name("opengeni-harness-monitor"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond),
		nats.ReconnectJitter(0, 0),
	)
	if err != nil {
		return nil, fmt.Errorf("monitor connect: %w", err)
	}
	m.nc = nc
	for _, suffix := range []string{"events", "hello"} {
		sub, err := nc.Subscribe("agent."+workspace+".*."+suffix, m.onMsg)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("monitor subscribe: %w", err)
		}
		_ = sub.SetPendingLimits(-1, -1)
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("monitor flush: %w", err)
	}
	return m, nil
}

// Close drops the connection.
func (m *Monitor) Close() { m.nc.Close() }

func (m *Monitor) onMsg(msg *nats.Msg) {
	at := time.Now()
	parts := strings.Split(msg.Subject, ".")
	if len(parts) != 4 {
		return
	}
	ev := Event{Agent: parts[2], At: at}
	switch parts[3] {
	case "hello":
		ev.Kind = EventHello
	case "events":
		var ae agentpb.AgentEvent
		if err := proto.Unmarshal(msg.Data, &ae); err != nil {
			return
		}
		switch {
		case ae.GetHeartbeat() != nil:
			ev.Kind, ev.Seq = EventHeartbeat, ae.GetHeartbeat().GetSeq()
		case ae.GetGoingOffline() != nil:
			ev.Kind = EventGoingOffline
		default:
			return
		}
	default:
		return
	}
	m.add(ev)
}

func (m *Monitor) add(ev Event) {
	m.mu.Lock()
	m.events = append(m.events, ev)
	close(m.changed)
	m.changed = make(chan struct{})
	m.mu.Unlock()
}

// Events returns the events of agent of the given kinds (all kinds when none
// given) received in [from, to] (a zero to means "until now").
func (m *Monitor) Events(agent string, from, to time.Time, kinds ...EventKind) []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Event
	for _, ev := range m.events {
		if ev.Agent != agent || ev.At.Before(from) || (!to.IsZero() && ev.At.After(to)) {
			continue
		}
		if len(kinds) > 0 && !containsKind(kinds, ev.Kind) {
			continue
		}
		out = append(out, ev)
	}
	return out
}

func containsKind(kinds []EventKind, k EventKind) bool {
	for _, x := range kinds {
		if x == k {
			return true
		}
	}
	return false
}

// WaitFor waits until agent announced one of kinds after `after` and returns
// the first such event.
func (m *Monitor) WaitFor(ctx context.Context, agent string, after time.Time, kinds ...EventKind) (Event, error) {
	for {
		m.mu.Lock()
		changed := m.changed
		m.mu.Unlock()
		if evs := m.Events(agent, after, time.Time{}, kinds...); len(evs) > 0 {
			return evs[0], nil
		}
		select {
		case <-ctx.Done():
			return Event{}, fmt.Errorf("waiting for %v of %s: %w", kinds, agent, ctx.Err())
		case <-changed:
		}
	}
}

// MaxHeartbeatGap is the longest time in [from, to] without a heartbeat of
// agent: between consecutive heartbeats, and from the last one to `to`. The
// heartbeat at or before `from` (if any) opens the window, so a window that
// starts just after a heartbeat is not charged for it. It also returns how
// many heartbeats fell inside the window.
func (m *Monitor) MaxHeartbeatGap(agent string, from, to time.Time) (time.Duration, int) {
	all := m.Events(agent, time.Time{}, to, EventHeartbeat)
	return maxGap(all, from, to)
}

// maxGap is MaxHeartbeatGap over heartbeats sorted by arrival.
func maxGap(beats []Event, from, to time.Time) (time.Duration, int) {
	prev := from
	var longest time.Duration
	n := 0
	for _, ev := range beats {
		if !ev.At.After(from) {
			prev = ev.At // the last beat before the window opens it
			continue
		}
		if ev.At.After(to) {
			break
		}
		n++
		longest = max(longest, ev.At.Sub(prev))
		prev = ev.At
	}
	return max(longest, to.Sub(prev)), n
}
