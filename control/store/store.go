// Package store keeps the platform's connected-machine state in JetStream
// key-value buckets: enrollments, pending device codes and machines
// (control.md §6). It also ingests the agents' Hello and AgentEvent messages
// (§6.5) and answers liveness (§3) from what it saw.
//
// Buckets (names prefixed by Options.Prefix, default "opengeni"):
//
//	<prefix>_enrollments  e.<ws>.<id>        Enrollment (JSON)
//	                      p.<ws>.<sha256(pubkey)>  the enrollment id (the (ws, pubkey) upsert key)
//	<prefix>_devices      d.<sha256(code)>   DeviceRequest (JSON, never the code itself); entries age out after DeviceMaxAge
//	                      u.<userCode>       the code hash of the newest request with that user code
//	<prefix>_machines     m.<ws>.<id>        Machine (JSON): Hello facts, last seen, latest metrics
//	                      s.<ws>.<id>        the downsampled metrics series (JSON array)
//	                      l.<ws>.<id>        ConnectionLease: the live connection instance (next revision)
//
// Read-modify-write goes through KV revisions (compare-and-set), so several
// control-plane replicas may share the buckets. Last-seen lives on the machine
// record, not the enrollment, so heartbeats never wake enrollment watchers
// (the auth callout watches enrollments for revocations).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Errors.
var (
	// ErrNotFound: no such record.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a create lost to an existing key (re-mint and retry).
	ErrExists = errors.New("store: already exists")
	// ErrConflict: a compare-and-set lost a race too many times.
	ErrConflict = errors.New("store: concurrent update")
	// ErrInvalidKey: an id cannot be a key (only [-_=/a-zA-Z0-9] allowed).
	ErrInvalidKey = errors.New("store: invalid id")
)

// Defaults.
const (
	DefaultPrefix          = "opengeni"
	DefaultSeriesInterval  = 60 * time.Second // MACHINE_METRICS_SERIES_INTERVAL_MS
	DefaultSeriesRetention = 24 * time.Hour
	DefaultDeviceMaxAge    = 24 * time.Hour
)

// Options configure a [Store]. Zero values take the defaults.
type Options struct {
	Prefix   string // bucket name prefix
	Replicas int    // bucket replicas (1 for an embedded server)
	// Storage is the buckets' storage; the default is file storage.
	Storage jetstream.StorageType
	// SeriesInterval is the minimum spacing of series points (60 s).
	SeriesInterval time.Duration
	// SeriesRetention bounds the series by age (24 h); the series holds at
	// most SeriesRetention/SeriesInterval points.
	SeriesRetention time.Duration
	// DeviceMaxAge is how long device requests are kept (24 h; the codes
	// themselves expire after 600 s).
	DeviceMaxAge time.Duration
	// Now is the clock (tests).
	Now    func() time.Time
	Logger *slog.Logger
}

// Store is the connected-machine state. It is safe for concurrent use.
type Store struct {
	opts        Options
	log         *slog.Logger
	enrollments jetstream.KeyValue
	devices     jetstream.KeyValue
	machines    jetstream.KeyValue

	// known caches enrollments seen to exist (ingestion's "unknown enrollment
	// → no-op" check). Enrollments are never deleted, so the cache is only
	// ever positive.
	known sync.Map // "<ws>.<id>" → struct{}
	// machinesMu guards the machine and series cache maps (held only for
	// map access). Machine records are written by ingestion only; the cache
	// saves a Get per heartbeat, and a revision mismatch (another writer)
	// reloads it. keyLocks serialize one key's read-modify-write (a stripe
	// per key hash), so ingestion workers update different machines in
	// parallel.
	machinesMu sync.Mutex
	keyLocks   [64]sync.Mutex
	machineC   map[string]*cachedMachine
	seriesC    map[string]*cachedSeries
}

type cachedMachine struct {
	m   Machine
	rev uint64
}

type cachedSeries struct {
	pts []MetricsPoint
	rev uint64
}

// New creates (or binds to) the buckets.
func New(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	return open(opts, func(bucket, desc string, maxAge time.Duration, o Options) (jetstream.KeyValue, error) {
		return js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: bucket, Description: desc, History: 1,
			Replicas: o.Replicas, Storage: o.Storage, TTL: maxAge,
		})
	})
}

// Open binds to buckets that [New] created, creating and changing nothing:
// for a client that reads the platform's state (`relay ctl` reading a
// machine's last-seen time). Missing buckets are an error.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Store, error) {
	return open(opts, func(bucket, _ string, _ time.Duration, _ Options) (jetstream.KeyValue, error) {
		return js.KeyValue(ctx, bucket)
	})
}

// bucketFunc creates or binds one bucket.
type bucketFunc func(bucket, desc string, maxAge time.Duration, o Options) (jetstream.KeyValue, error)

func open(opts Options, bucket bucketFunc) (*Store, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.SeriesInterval <= 0 {
		opts.SeriesInterval = DefaultSeriesInterval
	}
	if opts.SeriesRetention <= 0 {
		opts.SeriesRetention = DefaultSeriesRetention
	}
	if opts.DeviceMaxAge <= 0 {
		opts.DeviceMaxAge = DefaultDeviceMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{opts: opts, log: opts.Logger.With("component", "store"),
		machineC: map[string]*cachedMachine{}, seriesC: map[string]*cachedSeries{}}
	var err error
	mk := func(name, desc string, maxAge time.Duration) (jetstream.KeyValue, error) {
		kv, err := bucket(name, desc, maxAge, opts)
		if err != nil {
			return nil, fmt.Errorf("store: bucket %s: %w", name, err)
		}
		return kv, nil
	}
	if s.enrollments, err = mk(EnrollmentsBucket(opts.Prefix), "connected-machine enrollments", 0); err != nil {
		return nil, err
	}
	if s.devices, err = mk(opts.Prefix+"_devices", "pending device-flow enrollments", opts.DeviceMaxAge); err != nil {
		return nil, err
	}
	if s.machines, err = mk(opts.Prefix+"_machines", "connected-machine state and metrics", 0); err != nil {
		return nil, err
	}
	return s, nil
}

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.opts.Now() }

// Enrollments is the enrollments bucket (for watchers such as the auth
// callout). Enrollment records are under "e.<ws>.<id>".
func (s *Store) Enrollments() jetstream.KeyValue { return s.enrollments }

var keyToken = regexp.MustCompile(`^[-_=/a-zA-Z0-9]+$`)

// validID reports whether id can be one key token.
func validID(id string) bool { return len(id) <= 256 && keyToken.MatchString(id) }

func getJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string) (T, uint64, error) {
	var v T
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return v, 0, ErrNotFound
	}
	if err != nil {
		return v, 0, fmt.Errorf("store: get %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, 0, fmt.Errorf("store: decode %s: %w", key, err)
	}
	return v, e.Revision(), nil
}

// putJSON writes v under key: create when rev is 0, compare-and-set
// otherwise. A lost race is errCAS.
func putJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("store: encode %s: %w", key, err)
	}
	if rev == 0 {
		rev, err = kv.Create(ctx, key, b)
	} else {
		rev, err = kv.Update(ctx, key, b, rev)
	}
	if isExists(err) {
		return 0, errCAS
	}
	if err != nil {
		return 0, fmt.Errorf("store: put %s: %w", key, err)
	}
	return rev, nil
}

var errCAS = errors.New("store: revision mismatch")

// casRetries bounds compare-and-set loops.
const casRetries = 16

// mutate applies f to the record under key with compare-and-set, retrying
// lost races. f returns false to leave the record unchanged.
func mutate[T any](ctx context.Context, kv jetstream.KeyValue, key string, f func(*T) (bool, error)) (T, bool, error) {
	for range casRetries {
		v, rev, err := getJSON[T](ctx, kv, key)
		if err != nil {
			return v, false, err
		}
		changed, err := f(&v)
		if err != nil || !changed {
			return v, false, err
		}
		if _, err := putJSON(ctx, kv, key, &v, rev); errors.Is(err, errCAS) {
			continue
		} else if err != nil {
			return v, false, err
		}
		return v, true, nil
	}
	var zero T
	return zero, false, ErrConflict
}

// isExists reports a lost create or compare-and-set.
func isExists(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
