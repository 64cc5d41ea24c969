// Package revocation tells the stream relay which machines' enrollments are
// revoked, by watching the platform's enrollments bucket (JetStream KV,
// control/store) over NATS. It is the relay's [relay.RevocationSource]: the
// relay stays stateless, and a revocation closes the machine's live
// channels within the watch latency.
//
// Fail closed: until the watch has replayed the bucket, and whenever the
// NATS connection is down, [Watcher.Revoked] answers [ErrUnavailable] and
// the relay refuses agent opens (retryably). Channels already open stay
// open through a NATS outage; on reconnect the watch starts over, and every
// machine revoked meanwhile is closed then.
//
// What the watch needs from NATS, and nothing more (the relay's NATS user
// can be limited to it; internal/devstack does so):
//
//	publish   $JS.API.STREAM.INFO.KV_<bucket>
//	          $JS.API.CONSUMER.CREATE.KV_<bucket>.>   (ordered push consumer)
//	          $JS.API.CONSUMER.DELETE.KV_<bucket>.>   (stopping or resetting it)
//	          $JS.FC.KV_<bucket>.>                    (flow-control replies)
//	subscribe <InboxPrefix>.>                         (API replies and deliveries)
//
// Connect with nats.CustomInboxPrefix(InboxPrefix) so replies and deliveries
// land under the relay's own prefix.
package revocation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/backoff"
)

// InboxPrefix is the relay's private inbox prefix (nats.CustomInboxPrefix).
const InboxPrefix = "_INBOX_relay"

// ErrUnavailable: the watcher cannot tell whether a machine is revoked (not
// yet synced, or NATS is down).
var ErrUnavailable = errors.New("revocation: enrollment state unavailable")

type machine struct{ ws, agent string }

// Watcher follows the enrollments bucket. Create it with Start.
type Watcher struct {
	nc     *nats.Conn
	bucket string
	log    *slog.Logger

	mu       sync.Mutex
	revoked  map[machine]struct{} // revoked or deleted enrollments
	gens     map[machine]int      // credential generations above 1 of active enrollments
	synced   bool                 // the current watch replayed the bucket
	notify   []func(ws, agent string)
	syncedCh chan struct{} // closed at the first sync

	cancel context.CancelFunc
	done   chan struct{}
}

// Options configure a Watcher.
type Options struct {
	// Bucket is the enrollments bucket; "" is store.EnrollmentsBucket("").
	Bucket string
	Logger *slog.Logger
	// Retry paces re-establishing the watch; zero is 100 ms doubling to 5 s.
	Retry backoff.Policy
}

// Start watches the bucket over nc until Close. It returns at once: the
// watch (re)connects in the background, and Revoked fails closed until it
// has synced.
func Start(nc *nats.Conn, o Options) *Watcher {
	if o.Bucket == "" {
		o.Bucket = store.EnrollmentsBucket("")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Retry == (backoff.Policy{}) {
		o.Retry = backoff.Exponential(100*time.Millisecond, 5*time.Second)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{nc: nc, bucket: o.Bucket, log: o.Logger.With("component", "relay-revocation", "bucket", o.Bucket),
		revoked: map[machine]struct{}{}, gens: map[machine]int{}, syncedCh: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, &backoff.Backoff{Policy: o.Retry})
	return w
}

// Revoked reports whether the machine's enrollment is revoked (or its
// record deleted). A machine with no record is not revoked: its token was
// minted after its enrollment was written, and the watch may not have seen
// that write yet.
func (w *Watcher) Revoked(ws, agent string) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.revoked[machine{ws, agent}]; ok {
		return true, nil
	}
	if !w.synced || !w.nc.IsConnected() {
		return false, ErrUnavailable
	}
	return false, nil
}

// CredentialGeneration is the machine's current credential generation
// (control.md §9: bumped when a revoked enrollment is re-activated; 1 for
// one never re-activated or not seen). The relay refuses an ogr_ token of
// an older generation, so re-activation does not revive tokens issued
// before the revocation.
func (w *Watcher) CredentialGeneration(ws, agent string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return max(w.gens[machine{ws, agent}], 1)
}

// OnRevoke registers f, called (on the watch goroutine) with every machine
// revoked after the call.
func (w *Watcher) OnRevoke(f func(ws, agent string)) {
	w.mu.Lock()
	w.notify = append(w.notify, f)
	w.mu.Unlock()
}

// Synced is closed once the first watch has replayed the bucket.
func (w *Watcher) Synced() <-chan struct{} { return w.syncedCh }

// Close stops the watch.
func (w *Watcher) Close() {
	w.cancel()
	<-w.done
}

func (w *Watcher) run(ctx context.Context, bo *backoff.Backoff) {
	defer close(w.done)
	for ctx.Err() == nil {
		err := w.watch(ctx, bo)
		w.setUnsynced()
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("revocation watch down: agent opens are refused until it resyncs", "err", err)
		if bo.Sleep(ctx) != nil {
			return
		}
	}
}

var errDisconnected = errors.New("NATS connection lost")

// watch runs one KV watch: replay into a fresh set, swap it in at the
// end-of-replay marker, then apply live changes. It returns when the watch
// or the connection ends.
func (w *Watcher) watch(ctx context.Context, bo *backoff.Backoff) error {
	if !w.nc.IsConnected() {
		return errDisconnected
	}
	// Listen before checking again, so a drop between the check and the
	// watch is not missed.
	status := w.nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	defer w.nc.RemoveStatusListener(status)
	if !w.nc.IsConnected() {
		return errDisconnected
	}
	js, err := jetstream.New(w.nc)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kv, err := js.KeyValue(wctx, w.bucket)
	if err != nil {
		return fmt.Errorf("bind %s: %w", w.bucket, err)
	}
	kw, err := kv.Watch(wctx, store.EnrollmentKeys)
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.bucket, err)
	}
	defer func() {
		// Stopping deletes the ordered consumer with a JetStream API request,
		// which waits out its timeout while NATS is down: do not hold up a
		// reconnect or Close for it (the server reaps an idle consumer anyway).
		if w.nc.IsConnected() {
			_ = kw.Stop()
		} else {
			go func() { _ = kw.Stop() }()
		}
	}()
	replay := map[machine]struct{}{}
	replayGens := map[machine]int{}
	replaying := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-status:
			return errDisconnected
		case e, ok := <-kw.Updates():
			if !ok {
				return errors.New("watch ended")
			}
			if e == nil { // end of the initial replay
				replaying = false
				w.sync(replay, replayGens)
				bo.Reset()
				continue
			}
			m, revoked, gen, ok := w.decode(e)
			if !ok {
				continue
			}
			if replaying {
				if revoked {
					replay[m] = struct{}{}
				} else {
					delete(replay, m)
				}
				setGen(replayGens, m, gen)
				continue
			}
			w.apply(m, revoked, gen)
		}
	}
}

// decode reads one bucket entry: the machine, whether it is revoked and
// its credential generation. A deleted or purged record counts as revoked.
func (w *Watcher) decode(e jetstream.KeyValueEntry) (m machine, revoked bool, gen int, ok bool) {
	ws, id, ok := store.ParseEnrollmentKey(e.Key())
	if !ok {
		return machine{}, false, 0, false
	}
	m = machine{ws, id}
	if e.Operation() != jetstream.KeyValuePut {
		return m, true, 1, true
	}
	var rec store.Enrollment
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		// Unreadable is not active: refuse rather than guess.
		w.log.Warn("undecodable enrollment record counts as revoked", "key", e.Key(), "err", err)
		return m, true, 1, true
	}
	return m, !rec.Active(), rec.Generation(), true
}

// setGen keeps generations above 1 only: most machines are never
// re-activated, and an absent entry reads as 1.
func setGen(gens map[machine]int, m machine, gen int) {
	if gen > 1 {
		gens[m] = gen
	} else {
		delete(gens, m)
	}
}

// sync swaps in the replayed set and closes the channels of machines that
// became revoked while no watch ran.
func (w *Watcher) sync(replay map[machine]struct{}, gens map[machine]int) {
	w.mu.Lock()
	var fresh []machine
	for m := range replay {
		if _, ok := w.revoked[m]; !ok {
			fresh = append(fresh, m)
		}
	}
	first := !w.everSynced()
	w.revoked, w.gens, w.synced = replay, gens, true
	fs := w.notify
	w.mu.Unlock()
	if first {
		close(w.syncedCh)
	}
	w.log.Info("revocation watch synced", "revoked", len(replay))
	for _, m := range fresh {
		for _, f := range fs {
			f(m.ws, m.agent)
		}
	}
}

// everSynced reports whether syncedCh is closed (only sync closes it, on
// the one watch goroutine).
func (w *Watcher) everSynced() bool {
	select {
	case <-w.syncedCh:
		return true
	default:
		return false
	}
}

// apply records one live change and, for a new revocation, notifies.
func (w *Watcher) apply(m machine, revoked bool, gen int) {
	w.mu.Lock()
	setGen(w.gens, m, gen)
	_, was := w.revoked[m]
	if revoked {
		w.revoked[m] = struct{}{}
	} else {
		delete(w.revoked, m)
	}
	fs := w.notify
	w.mu.Unlock()
	if revoked && !was {
		w.log.Info("machine enrollment revoked", "ws", m.ws, "agent", m.agent)
		for _, f := range fs {
			f(m.ws, m.agent)
		}
	}
}

func (w *Watcher) setUnsynced() {
	w.mu.Lock()
	w.synced = false
	w.mu.Unlock()
}

// NATSPermissions is the least privilege the watch of bucket needs: the
// publish and subscribe allow lists of the relay's NATS user (see the
// package comment). Nothing else in the account is reachable with them.
func NATSPermissions(bucket string) (publish, subscribe []string) {
	stream := "KV_" + bucket
	return []string{
			"$JS.API.STREAM.INFO." + stream,
			"$JS.API.CONSUMER.CREATE." + stream + ".>",
			"$JS.API.CONSUMER.DELETE." + stream + ".>",
			"$JS.FC." + stream + ".>",
		}, []string{
			InboxPrefix + ".>",
		}
}
