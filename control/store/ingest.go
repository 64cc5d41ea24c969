package store

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"strings"
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

// Ingestion defaults ([IngestOptions]).
const (
	// DefaultIngestQueue bounds the messages received but not yet routed
	// to a worker; past it NATS drops messages ("slow consumer").
	DefaultIngestQueue = 8192
	// DefaultIngestWorkers is how many machines are applied in parallel
	// (the work waits on KV round trips, it does not compute).
	DefaultIngestWorkers = 32
	// DefaultIngestWorkerQueue bounds each worker's backlog; a full one
	// holds up routing (and so, past DefaultIngestQueue, the subscription).
	DefaultIngestWorkerQueue = 512
	// DefaultIngestDedupeEntries bounds the machines whose last Hello or
	// heartbeat is remembered for deduplication, over all workers.
	DefaultIngestDedupeEntries = 1 << 17
)

// IngestOptions tune [Store.IngestWith]; zero fields take the defaults.
type IngestOptions struct {
	Workers       int // parallel workers (machines are spread over them by "<ws>.<id>")
	Queue         int // messages waiting to be routed to a worker
	WorkerQueue   int // messages waiting in each worker
	DedupeEntries int // machines remembered for Hello and heartbeat deduplication
}

func (o IngestOptions) withDefaults() IngestOptions {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.Workers, DefaultIngestWorkers)
	def(&o.Queue, DefaultIngestQueue)
	def(&o.WorkerQueue, DefaultIngestWorkerQueue)
	def(&o.DedupeEntries, DefaultIngestDedupeEntries)
	return o
}

// Ingestor applies agents' Hello and AgentEvent messages to the store.
//
// Messages are received in one ordered stream (all subjects share one
// channel, filled in arrival order by the connection's reader), routed by
// the machine in the subject ("<ws>.<id>") to one of several workers, and
// applied there: one machine's messages stay in arrival order on one
// worker, different machines proceed in parallel. All queues are bounded;
// past them NATS drops messages and counts them as slow-consumer drops.
//
// The agent sends each Hello and heartbeat on the v1 and the
// connection-instance subject; the copy arriving second (the other subject;
// a heartbeat with the same seq and uptime_ms, a Hello with the same bytes)
// does not update the machine record again, and the instance copy renews
// (Hello: announces) the connection lease whichever arrives first.
//
// A handler error is logged and swallowed. Plain subscriptions, no queue
// group: every control-plane replica ingests (writes are idempotent).
type Ingestor struct {
	s       *Store
	opts    IngestOptions
	subs    []*nats.Subscription
	ch      chan *nats.Msg
	workers []chan *nats.Msg
	wg      sync.WaitGroup
	stop    context.CancelFunc
	once    sync.Once

	handled    atomic.Uint64
	failed     atomic.Uint64
	duplicates atomic.Uint64
}

// Ingest subscribes nc to the hello and events subjects and starts
// ingestion with the default [IngestOptions]. Close it to stop.
func (s *Store) Ingest(nc *nats.Conn) (*Ingestor, error) {
	return s.IngestWith(nc, IngestOptions{})
}

// IngestWith is [Store.Ingest] with options.
func (s *Store) IngestWith(nc *nats.Conn, opts IngestOptions) (*Ingestor, error) {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	in := &Ingestor{s: s, opts: opts, ch: make(chan *nats.Msg, opts.Queue), stop: cancel}
	for _, subj := range []string{HelloSubjects, EventsSubjects, ConnectionHelloSubjects, ConnectionEventsSubjects} {
		// One channel for every subject: the connection's reader fills it
		// in arrival order, so a machine's hello precedes its heartbeats
		// across subjects. When it is full NATS drops (and counts) the
		// message: a slow store must not grow memory without bound, and
		// heartbeats are periodic, so the next one heals.
		sub, err := nc.ChanSubscribe(subj, in.ch)
		if err != nil {
			cancel()
			for _, s := range in.subs {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("store: subscribe %s: %w", subj, err)
		}
		in.subs = append(in.subs, sub)
	}
	in.workers = make([]chan *nats.Msg, opts.Workers)
	dedupePerWorker := max(opts.DedupeEntries/opts.Workers, 1)
	for i := range in.workers {
		in.workers[i] = make(chan *nats.Msg, opts.WorkerQueue)
		in.wg.Add(1)
		go in.work(ctx, in.workers[i], newCopyDedupe(dedupePerWorker))
	}
	in.wg.Add(1)
	go in.route(ctx)
	if err := nc.Flush(); err != nil {
		in.Close()
		return nil, fmt.Errorf("store: subscribe: %w", err)
	}
	return in, nil
}

// Handled is the number of messages processed without error, counted once
// each when its worker finished it; a Hello's or heartbeat's second copy
// counts here too (see [Ingestor.Duplicates]).
func (in *Ingestor) Handled() uint64 { return in.handled.Load() }

// Failed is the number of messages whose handling failed (undecodable, not
// an agent subject, a store error).
func (in *Ingestor) Failed() uint64 { return in.failed.Load() }

// Duplicates is the number of handled Hellos and heartbeats that were the
// second copy of one already applied to the machine record (counted in
// Handled too).
func (in *Ingestor) Duplicates() uint64 { return in.duplicates.Load() }

// Dropped is the number of messages NATS dropped because the ingestion
// queue was full (slow consumer), over all subjects.
func (in *Ingestor) Dropped() uint64 {
	var n uint64
	for _, sub := range in.subs {
		if d, err := sub.Dropped(); err == nil && d > 0 {
			n += uint64(d)
		}
	}
	return n
}

// Close unsubscribes and stops routing and the workers; queued messages are
// dropped.
func (in *Ingestor) Close() {
	in.once.Do(func() {
		for _, s := range in.subs {
			_ = s.Unsubscribe()
		}
		in.stop()
		in.wg.Wait()
	})
}

// route hands each message to the worker of its machine, in arrival order.
func (in *Ingestor) route(ctx context.Context) {
	defer in.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-in.ch:
			w := in.workers[stripe(subjectMachine(m.Subject), len(in.workers))]
			select {
			case w <- m:
			case <-ctx.Done():
				return
			}
		}
	}
}

func (in *Ingestor) work(ctx context.Context, q <-chan *nats.Msg, dd *copyDedupe) {
	defer in.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			dup, err := in.s.handleMessage(ctx, m.Subject, m.Data, dd)
			if err != nil {
				in.failed.Add(1)
				if !errors.Is(err, context.Canceled) {
					in.s.log.Debug("ingest", "subject", m.Subject, "err", err)
				}
				continue
			}
			if dup {
				in.duplicates.Add(1)
			}
			in.handled.Add(1)
		}
	}
}

// subjectMachine is "<ws>.<id>" of "agent.<ws>.<id>.…" without splitting
// (the routing key; a malformed subject yields some string, and its worker
// reports the error).
func subjectMachine(subject string) string {
	rest, ok := strings.CutPrefix(subject, "agent.")
	if !ok {
		return subject
	}
	ws, tail, ok := strings.Cut(rest, ".")
	if !ok {
		return subject
	}
	id, _, _ := strings.Cut(tail, ".")
	return rest[:len(ws)+1+len(id)]
}

// copyDedupe remembers, per machine, the last Hello or heartbeat applied
// to its record and which subject carried it, so the other subject's copy
// of the same message is recognised. One worker owns one (no locking). It
// holds at most max machines; past that an arbitrary one is forgotten,
// which only costs that machine's next second copy a redundant write.
type copyDedupe struct {
	last map[string]copyID
	max  int
}

// copyID identifies one Hello (hello set, a = a hash of its bytes) or one
// heartbeat (a = seq, b = uptime_ms) and the subject that carried it.
type copyID struct {
	hello    bool
	a, b     uint64
	instance bool // carried on the connection-instance subject
}

// helloSeed keys the Hello hashes (per process; only compared within it).
var helloSeed = maphash.MakeSeed()

func helloCopy(data []byte, instance bool) copyID {
	return copyID{hello: true, a: maphash.Bytes(helloSeed, data), instance: instance}
}

func heartbeatCopy(hb *agentpb.Heartbeat, instance bool) copyID {
	return copyID{a: hb.GetSeq(), b: hb.GetUptimeMs(), instance: instance}
}

func newCopyDedupe(max int) *copyDedupe {
	return &copyDedupe{last: map[string]copyID{}, max: max}
}

// second reports whether c is the other subject's copy of the message last
// applied for the machine; it then forgets it (one message has two copies,
// a third is applied again).
func (d *copyDedupe) second(machine string, c copyID) bool {
	if d == nil {
		return false
	}
	prev, ok := d.last[machine]
	if ok && prev.hello == c.hello && prev.a == c.a && prev.b == c.b && prev.instance != c.instance {
		delete(d.last, machine)
		return true
	}
	return false
}

// applied records c as the machine's last applied message.
func (d *copyDedupe) applied(machine string, c copyID) {
	if d == nil {
		return
	}
	if _, ok := d.last[machine]; !ok && len(d.last) >= d.max {
		for k := range d.last {
			delete(d.last, k)
			break
		}
	}
	d.last[machine] = c
}

// forget drops the machine (GoingOffline).
func (d *copyDedupe) forget(machine string) {
	if d != nil {
		delete(d.last, machine)
	}
}

// HandleMessage applies one message published on an agent's hello or events
// subject (exactly "agent.<ws>.<id>.hello|events", or the next revision's
// "agent.<ws>.<id>.connection.<inst>.hello|events"; ws, id and inst come
// from the subject, never from the payload). On a connection subject, hello
// and heartbeats renew the instance's connection lease and GoingOffline
// releases it.
func (s *Store) HandleMessage(ctx context.Context, subject string, data []byte) error {
	_, err := s.handleMessage(ctx, subject, data, nil)
	return err
}

// handleMessage is HandleMessage with heartbeat deduplication (dd nil: none);
// dup reports a heartbeat's second copy, which did not touch the machine
// record.
func (s *Store) handleMessage(ctx context.Context, subject string, data []byte, dd *copyDedupe) (dup bool, err error) {
	if ws, id, inst, err := parseAgentSubject(subject, "hello"); err == nil {
		var h agentpb.Hello
		if err := proto.Unmarshal(data, &h); err != nil {
			return false, fmt.Errorf("store: decode hello: %w", err)
		}
		return s.applyOnce(ctx, dd, ws, id, inst, true, helloCopy(data, inst != ""), func() error { return s.ApplyHello(ctx, ws, id, &h) })
	}
	ws, id, inst, err := parseAgentSubject(subject, "events")
	if err != nil {
		return false, err
	}
	var ev agentpb.AgentEvent
	if err := proto.Unmarshal(data, &ev); err != nil {
		return false, fmt.Errorf("store: decode event: %w", err)
	}
	switch e := ev.GetEvent().(type) {
	case *agentpb.AgentEvent_Heartbeat:
		return s.applyOnce(ctx, dd, ws, id, inst, false, heartbeatCopy(e.Heartbeat, inst != ""), func() error { return s.ApplyHeartbeat(ctx, ws, id, e.Heartbeat) })
	case *agentpb.AgentEvent_GoingOffline:
		dd.forget(ws + "." + id)
		if err := s.ApplyGoingOffline(ctx, ws, id, e.GoingOffline); err != nil {
			return false, err
		}
		if inst != "" {
			return false, s.ReleaseConnection(ctx, ws, id, inst)
		}
	case *agentpb.AgentEvent_AgentUpdateProgress:
		return false, s.ApplyUpdateProgress(ctx, ws, id, e.AgentUpdateProgress)
	}
	return false, nil
}

// applyOnce runs apply (the machine-record update) unless c is the second
// copy of the message last applied, then renews the instance's lease
// (connectionSeen) in either case.
func (s *Store) applyOnce(ctx context.Context, dd *copyDedupe, ws, id, inst string, hello bool, c copyID, apply func() error) (dup bool, err error) {
	machine := ws + "." + id
	if dup = dd.second(machine, c); !dup {
		if err := apply(); err != nil {
			return false, err
		}
		dd.applied(machine, c)
	}
	return dup, s.connectionSeen(ctx, ws, id, inst, hello)
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
