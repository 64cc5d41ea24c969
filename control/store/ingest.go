package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Ingestion subjects (§6.5).
const (
	HelloSubjects  = "agent.*.*.hello"
	EventsSubjects = "agent.*.*.events"
)

// DefaultIngestQueue bounds the messages waiting for the ingestion loop.
const DefaultIngestQueue = 8192

// Ingestor applies agents' Hello and AgentEvent messages to the store.
// Messages are handled serially, in arrival order, on one goroutine; a
// handler error is logged and swallowed. Plain subscriptions, no queue
// group: every control-plane replica ingests (writes are idempotent).
type Ingestor struct {
	s       *Store
	subs    []*nats.Subscription
	ch      chan *nats.Msg
	done    chan struct{}
	stop    context.CancelFunc
	once    sync.Once
	handled atomic.Uint64
	failed  atomic.Uint64
}

// Ingest subscribes nc to the hello and events subjects and starts the
// ingestion loop. Close it to stop.
func (s *Store) Ingest(nc *nats.Conn) (*Ingestor, error) {
	ctx, cancel := context.WithCancel(context.Background())
	in := &Ingestor{s: s, ch: make(chan *nats.Msg, DefaultIngestQueue), done: make(chan struct{}), stop: cancel}
	for _, subj := range []string{HelloSubjects, EventsSubjects} {
		sub, err := nc.ChanSubscribe(subj, in.ch)
		if err != nil {
			cancel()
			for _, s := range in.subs {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("store: subscribe %s: %w", subj, err)
		}
		// A slow store must not grow memory without bound: past the
		// pending limits NATS drops (and counts) messages for this
		// subscription; heartbeats are periodic, so the next one heals.
		_ = sub.SetPendingLimits(DefaultIngestQueue, 64<<20)
		in.subs = append(in.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		in.Close()
		return nil, fmt.Errorf("store: subscribe: %w", err)
	}
	go in.loop(ctx)
	return in, nil
}

// Handled is the number of messages processed without error; Failed those
// that errored.
func (in *Ingestor) Handled() uint64 { return in.handled.Load() }

// Failed is the number of messages whose handling failed.
func (in *Ingestor) Failed() uint64 { return in.failed.Load() }

// Close unsubscribes and stops the loop; queued messages are dropped.
func (in *Ingestor) Close() {
	in.once.Do(func() {
		for _, s := range in.subs {
			_ = s.Unsubscribe()
		}
		in.stop()
		<-in.done
	})
}

func (in *Ingestor) loop(ctx context.Context) {
	defer close(in.done)
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-in.ch:
			if err := in.s.HandleMessage(ctx, m.Subject, m.Data); err != nil {
				in.failed.Add(1)
				if !errors.Is(err, context.Canceled) {
					in.s.log.Debug("ingest", "subject", m.Subject, "err", err)
				}
				continue
			}
			in.handled.Add(1)
		}
	}
}

// HandleMessage applies one message published on an agent's hello or events
// subject (exactly "agent.<ws>.<id>.hello|events"; ws and id come from the
// subject, never from the payload).
func (s *Store) HandleMessage(ctx context.Context, subject string, data []byte) error {
	if ws, id, err := parseAgentSubject(subject, "hello"); err == nil {
		var h agentpb.Hello
		if err := proto.Unmarshal(data, &h); err != nil {
			return fmt.Errorf("store: decode hello: %w", err)
		}
		return s.ApplyHello(ctx, ws, id, &h)
	}
	ws, id, err := parseAgentSubject(subject, "events")
	if err != nil {
		return err
	}
	var ev agentpb.AgentEvent
	if err := proto.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("store: decode event: %w", err)
	}
	switch e := ev.GetEvent().(type) {
	case *agentpb.AgentEvent_Heartbeat:
		return s.ApplyHeartbeat(ctx, ws, id, e.Heartbeat)
	case *agentpb.AgentEvent_GoingOffline:
		return s.ApplyGoingOffline(ctx, ws, id, e.GoingOffline)
	}
	return nil
}
