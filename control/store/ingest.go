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
	// ConnectionHelloSubjects and ConnectionEventsSubjects are the next
	// revision's per-connection subjects (control.md §9).
	ConnectionHelloSubjects  = "agent.*.*.connection.*.hello"
	ConnectionEventsSubjects = "agent.*.*.connection.*.events"
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
	for _, subj := range []string{HelloSubjects, EventsSubjects, ConnectionHelloSubjects, ConnectionEventsSubjects} {
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
// subject (exactly "agent.<ws>.<id>.hello|events", or the next revision's
// "agent.<ws>.<id>.connection.<inst>.hello|events"; ws, id and inst come
// from the subject, never from the payload). On a connection subject, hello
// and heartbeats renew the instance's connection lease and GoingOffline
// releases it.
func (s *Store) HandleMessage(ctx context.Context, subject string, data []byte) error {
	if ws, id, inst, err := parseAgentSubject(subject, "hello"); err == nil {
		var h agentpb.Hello
		if err := proto.Unmarshal(data, &h); err != nil {
			return fmt.Errorf("store: decode hello: %w", err)
		}
		if err := s.ApplyHello(ctx, ws, id, &h); err != nil {
			return err
		}
		return s.connectionSeen(ctx, ws, id, inst, true)
	}
	ws, id, inst, err := parseAgentSubject(subject, "events")
	if err != nil {
		return err
	}
	var ev agentpb.AgentEvent
	if err := proto.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("store: decode event: %w", err)
	}
	switch e := ev.GetEvent().(type) {
	case *agentpb.AgentEvent_Heartbeat:
		if err := s.ApplyHeartbeat(ctx, ws, id, e.Heartbeat); err != nil {
			return err
		}
		return s.connectionSeen(ctx, ws, id, inst, false)
	case *agentpb.AgentEvent_GoingOffline:
		if err := s.ApplyGoingOffline(ctx, ws, id, e.GoingOffline); err != nil {
			return err
		}
		if inst != "" {
			return s.ReleaseConnection(ctx, ws, id, inst)
		}
	case *agentpb.AgentEvent_AgentUpdateProgress:
		return s.ApplyUpdateProgress(ctx, ws, id, e.AgentUpdateProgress)
	}
	return nil
}

// connectionSeen renews a next-revision instance's lease (hello marks it
// announced, so routing may use it) and, on hello, records it as the
// machine's instance; v1 subjects (inst "") have neither. A heartbeat costs
// the lease's read and compare-and-set, nothing more.
func (s *Store) connectionSeen(ctx context.Context, ws, id, inst string, hello bool) error {
	if inst == "" {
		return nil
	}
	ok, err := s.enrollmentExists(ctx, ws, id)
	if err != nil || !ok {
		return err
	}
	if err := s.RenewConnection(ctx, ws, id, inst, hello); err != nil {
		return err // ErrLeaseHeld: a runner the callout should not have admitted
	}
	if !hello {
		return nil
	}
	return s.updateMachine(ctx, ws, id, func(m *Machine) { m.Instance = inst })
}
