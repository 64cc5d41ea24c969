package harness

// What `harness fleet` measures: memory (runtime statistics and the heap
// profile, attributed to nats-server by allocation site), heartbeat
// ingestion (a watch on the store's machines bucket: what was written, not
// what was sent), and control-plane pings.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
)

// memSnapshot is one process's memory after a forced GC.
type memSnapshot struct {
	HeapInuse  uint64  `json:"heapInuse"`
	StackInuse uint64  `json:"stackInuse"`
	Sys        uint64  `json:"sys"`
	RSSKiB     float64 `json:"rssKiB"`
	Goroutines int     `json:"goroutines"`
	// NATSServerHeap is the in-use heap allocated by nats-server code
	// (heap profile records with a nats-server frame, scaled as pprof
	// does); only taken in the platform process.
	NATSServerHeap uint64 `json:"natsServerHeap,omitempty"`
}

// natsServerFrame marks an allocation site inside nats-server.
const natsServerFrame = "github.com/nats-io/nats-server/v2/server."

// fleetMemProfileRate samples the heap finely enough to attribute per
// connection memory (the default samples every 512 KiB).
const fleetMemProfileRate = 16 << 10

// takeMem collects garbage and reads this process's memory; attribute adds
// the nats-server share of the heap.
func takeMem(attribute bool) memSnapshot {
	// The heap profile is published at the end of a GC cycle and may be
	// two cycles old: two collections make it current.
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := memSnapshot{HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, Sys: ms.Sys, RSSKiB: selfRSSKiB(),
		Goroutines: runtime.NumGoroutine()}
	if attribute {
		s.NATSServerHeap = heapInuseWithFrame(natsServerFrame)
	}
	return s
}

// heapInuseWithFrame estimates the in-use heap allocated under a function
// whose name contains frame, from the runtime's sampled heap profile.
func heapInuseWithFrame(frame string) uint64 {
	n, _ := runtime.MemProfile(nil, false)
	var recs []runtime.MemProfileRecord
	for {
		recs = make([]runtime.MemProfileRecord, n+64)
		var ok bool
		if n, ok = runtime.MemProfile(recs, false); ok {
			recs = recs[:n]
			break
		}
	}
	var total float64
	for i := range recs {
		r := &recs[i]
		objs, bytes := r.InUseObjects(), r.InUseBytes()
		if objs <= 0 || bytes <= 0 || !stackHas(r.Stack(), frame) {
			continue
		}
		total += scaleHeapSample(objs, bytes, runtime.MemProfileRate)
	}
	return uint64(total)
}

func stackHas(pcs []uintptr, frame string) bool {
	frames := runtime.CallersFrames(pcs)
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, frame) {
			return true
		}
		if !more {
			return false
		}
	}
}

// scaleHeapSample undoes the heap profile's sampling (as runtime/pprof
// does): an allocation of average size s is sampled with probability
// 1-exp(-s/rate).
func scaleHeapSample(count, size int64, rate int) float64 {
	if rate <= 1 {
		return float64(size)
	}
	avg := float64(size) / float64(count)
	return float64(size) / (1 - math.Exp(-avg/float64(rate)))
}

// ingestWatch counts what the store wrote for the fleet's machines: a watch
// on the machines bucket's records (m.<ws>.<id>) sees every write; a
// heartbeat counts once per machine and sequence number (the agent sends
// each on two subjects, and both are ingested), a Hello once per machine.
type ingestWatch struct {
	ws      string
	watcher jetstream.KeyWatcher

	mu         sync.Mutex
	epoch      time.Time // the sims' epoch (heartbeat uptimes count from it)
	machines   map[string]*ingestState
	hellos     int
	beaten     int    // machines with at least one heartbeat ingested
	heartbeats uint64 // distinct heartbeats ingested
	lags       []time.Duration
	changed    chan struct{} // closed and replaced on every counted write
	done       chan struct{}
}

type ingestState struct {
	hello   bool
	lastSeq uint64
}

// machinesBucket is the store's machines bucket (store.Options.Prefix
// "_machines").
func machinesBucket(prefix string) string {
	if prefix == "" {
		prefix = store.DefaultPrefix
	}
	return prefix + "_machines"
}

// watchIngestion starts watching the machines bucket for the given agents'
// records.
func watchIngestion(ctx context.Context, js jetstream.JetStream, prefix, ws string, agents []string) (*ingestWatch, error) {
	kv, err := js.KeyValue(ctx, machinesBucket(prefix))
	if err != nil {
		return nil, fmt.Errorf("fleet: machines bucket: %w", err)
	}
	w := &ingestWatch{ws: ws, machines: make(map[string]*ingestState, len(agents)), changed: make(chan struct{}),
		done: make(chan struct{})}
	for _, a := range agents {
		w.machines[a] = &ingestState{}
	}
	if w.watcher, err = kv.Watch(ctx, "m."+ws+".>", jetstream.UpdatesOnly()); err != nil {
		return nil, fmt.Errorf("fleet: watch machines: %w", err)
	}
	go w.loop()
	return w, nil
}

func (w *ingestWatch) loop() {
	defer close(w.done)
	for e := range w.watcher.Updates() {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var m store.Machine
		if err := json.Unmarshal(e.Value(), &m); err != nil || m.WorkspaceID != w.ws {
			continue
		}
		w.record(&m)
	}
}

func (w *ingestWatch) record(m *store.Machine) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.machines[m.AgentID]
	if st == nil {
		return
	}
	counted := false
	if m.HelloAt != nil && !st.hello {
		st.hello, counted = true, true
		w.hellos++
	}
	if hb := m.Heartbeat; hb != nil && hb.Seq != st.lastSeq {
		if st.lastSeq == 0 {
			w.beaten++
		}
		st.lastSeq, counted = hb.Seq, true
		w.heartbeats++
		if !w.epoch.IsZero() && m.LastSeenAt != nil {
			w.lags = append(w.lags, m.LastSeenAt.Sub(w.epoch.Add(time.Duration(hb.UptimeMs)*time.Millisecond)))
		}
	}
	if counted {
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

// setEpoch says when the sims' heartbeat uptimes start.
func (w *ingestWatch) setEpoch(t time.Time) {
	w.mu.Lock()
	w.epoch = t
	w.mu.Unlock()
}

// ingestCounts is a moment of the watch.
type ingestCounts struct {
	Hellos, Beaten int // machines with a Hello / a heartbeat ingested
	Heartbeats     uint64
}

// counts returns the counts and (with reset) takes the lags gathered so far.
func (w *ingestWatch) counts(reset bool) (ingestCounts, []time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := ingestCounts{Hellos: w.hellos, Beaten: w.beaten, Heartbeats: w.heartbeats}
	lags := w.lags
	if reset {
		w.lags = nil
	}
	return c, lags
}

// errIngestStalled: no machine's first Hello or heartbeat was ingested for
// a while; what is missing was lost (a Hello is only sent again at the
// next reconnect).
var errIngestStalled = errors.New("fleet: ingestion of first hellos and heartbeats stalled")

// waitAll waits until every machine's Hello and a heartbeat were ingested,
// or until stall passed without a new one.
func (w *ingestWatch) waitAll(ctx context.Context, stall time.Duration) error {
	progress := -1
	var stalled <-chan time.Time
	for {
		w.mu.Lock()
		n := w.hellos + w.beaten
		ch := w.changed
		w.mu.Unlock()
		if n == 2*len(w.machines) {
			return nil
		}
		if n != progress {
			progress, stalled = n, time.After(stall)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-stalled:
			return errIngestStalled
		case <-ch:
		}
	}
}

// quiesce waits until nothing was counted for idle (what was sent has
// been written, or lost), at most max.
func (w *ingestWatch) quiesce(ctx context.Context, idle, max time.Duration) {
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		quiet := time.NewTimer(idle)
		select {
		case <-ctx.Done():
		case <-deadline.C:
		case <-quiet.C:
		case <-ch:
			quiet.Stop()
			continue
		}
		quiet.Stop()
		return
	}
}

func (w *ingestWatch) stop() {
	_ = w.watcher.Stop()
	<-w.done
}

// pingResult is one ping sweep across the fleet.
type pingResult struct {
	latencies  []time.Duration // sorted; answered pings only
	failed     int
	firstError error
}

// pingFleet pings every machine once through the control library
// (Session.Probe, routed to the live connection instance the store knows),
// conc at a time.
func pingFleet(ctx context.Context, rpc control.RPC, instances control.InstanceResolver, ws string, agents []string,
	conc int, timeout time.Duration) (pingResult, error) {
	var (
		mu  sync.Mutex
		res pingResult
		wg  sync.WaitGroup
	)
	work := make(chan string)
	for range min(conc, len(agents)) {
		wg.Go(func() {
			for id := range work {
				s, err := control.NewSession(control.SessionConfig{WorkspaceID: ws, AgentID: id, RPC: rpc, Instances: instances, Timeout: timeout})
				var took time.Duration
				if err == nil {
					start := time.Now()
					err = s.Probe(ctx)
					took = time.Since(start)
				}
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstError == nil {
						res.firstError = fmt.Errorf("machine %s: %w", id, err)
					}
				} else {
					res.latencies = append(res.latencies, took)
				}
				mu.Unlock()
			}
		})
	}
	for _, id := range agents {
		if ctx.Err() != nil {
			break
		}
		work <- id
	}
	close(work)
	wg.Wait()
	slices.Sort(res.latencies)
	return res, ctx.Err()
}

// execSample runs the exec stub ("echo <id>") on up to n machines and
// returns how many answered with the right output.
func execSample(ctx context.Context, rpc control.RPC, instances control.InstanceResolver, ws string, agents []string,
	n int, timeout time.Duration) (ok int, firstErr error) {
	for _, id := range agents[:min(n, len(agents))] {
		s, err := control.NewSession(control.SessionConfig{WorkspaceID: ws, AgentID: id, RPC: rpc, Instances: instances, Timeout: timeout})
		var out string
		if err == nil {
			out, err = s.ExecCommand(ctx, "echo "+id, "")
		}
		if err == nil && out != id+"\n" {
			err = fmt.Errorf("exec stub answered %q", out)
		}
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("machine %s: %w", id, err)
			}
			if errors.Is(err, context.Canceled) {
				return ok, firstErr
			}
			continue
		}
		ok++
	}
	return ok, firstErr
}

// storeCount reads every machine's record from the store (independently
// of the watch): how many have a Hello and a heartbeat recorded.
func storeCount(ctx context.Context, st *store.Store, ws string, agents []string) (hellos, beaten int, err error) {
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range min(enrollWorkers, len(agents)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(agents) && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				m, gerr := st.GetMachine(ctx, ws, agents[i])
				mu.Lock()
				switch {
				case errors.Is(gerr, store.ErrNotFound):
				case gerr != nil:
					err = cmpErr(err, gerr)
				default:
					if m.HelloAt != nil {
						hellos++
					}
					if m.Heartbeat != nil {
						beaten++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return hellos, beaten, cmpErr(err, ctx.Err())
}
