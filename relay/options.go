package relay

import (
	"net/netip"
	"time"

	"github.com/coder/quartz"
	"github.com/nats-io/nats.go"
)

// Options configures a relay Server. DefaultOptions gives the reference
// defaults of relay.md §1.1; cmd/relay maps env vars and CLI flags onto it
// (the library reads neither).
type Options struct {
	// Bind is the listen host:port.
	Bind string
	// StreamTokenSecret verifies viewer ogs_ tokens. Empty rejects every viewer.
	StreamTokenSecret string
	// RelayTokenSecret verifies agent ogr_ tokens; empty falls back to StreamTokenSecret.
	RelayTokenSecret string
	// RingFrames is the replay ring capacity per channel direction (0 is treated as 1).
	RingFrames int
	// SpliceBuffer is parsed for compatibility and unused, as in the reference
	// (the per-connection queue is QueueLen).
	SpliceBuffer int
	// RateBurstBytes is the leaky-bucket capacity per side.
	RateBurstBytes uint64
	// RateBytesPerSec is the leaky-bucket refill per side.
	RateBytesPerSec uint64
	// PairTimeout is the half-open channel reaping age.
	PairTimeout time.Duration

	// Beyond the reference (relay.md §10).

	// HandshakeTimeout bounds the wait for the first StreamOpen.
	HandshakeTimeout time.Duration
	// PingInterval is how often the relay pings each socket; 0 disables keepalive.
	PingInterval time.Duration
	// PingTimeout is how long a pong may take before the socket is dropped.
	PingTimeout time.Duration
	// WriteTimeout bounds one message write to a peer; a peer that cannot take
	// one message in this time is dropped.
	WriteTimeout time.Duration
	// ReapInterval is the half-open reaper's period (reference: 5 s).
	ReapInterval time.Duration
	// QueueLen is the bounded outbound queue per connection (reference: 256).
	QueueLen int
	// CloseRetention is how long a channel its producer closed is kept for
	// late viewers: one attaching within it gets the retained output and the
	// producer's StreamClose (then the socket is dropped) instead of an
	// empty channel that no producer will ever join.
	CloseRetention time.Duration
	// MaxViewers caps the viewers watching one channel; attaching one more
	// fences the oldest.
	MaxViewers int
	// OpenRateBurst and OpenRatePerSec bound /stream upgrades per client IP
	// (a token bucket; over it the relay answers 429 before the upgrade).
	// OpenRateBurst 0 disables the limit.
	OpenRateBurst  int
	OpenRatePerSec int
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// for the per-IP limit; from any other peer the socket address is the
	// client (see internal/iplimit).
	TrustedProxies []netip.Prefix
	// Revocations, when set, makes the relay refuse opens for machines whose
	// enrollment is revoked and close their live channels when a revocation
	// arrives (see RevocationSource). Nil checks nothing (the reference).
	Revocations RevocationSource

	// NATS, when set, makes this relay one of any number of replicas that
	// route channels between themselves (relay.md §10.4, see replica.go):
	// a side landing here reaches its channel on whichever replica holds
	// it. Nil is the single relay (no routing, nothing published). The
	// caller owns the connection; see replica.go for the subjects the
	// NATS user needs.
	NATS *nats.Conn
	// ReplicaHeartbeat is how often a replica announces the channels it
	// holds and its proxied sides tell their home they live.
	ReplicaHeartbeat time.Duration
	// PeerTimeout is the silence after which a replica gives up on a
	// channel's home (its clients reconnect) or on a proxied side.
	PeerTimeout time.Duration

	// Now is the clock (tests); nil means Clock.Now.
	Now func() time.Time
	// Clock times the half-open reaper and the keepalive pings; nil is the
	// real clock (tests pass a quartz.Mock and advance it).
	Clock quartz.Clock
}

// Reference defaults.
const (
	DefaultBind             = "0.0.0.0:8443"
	DefaultRingFrames       = 1024
	DefaultSpliceBuffer     = 256
	DefaultRateBurstBytes   = 16 << 20
	DefaultRateBytesPerSec  = 8 << 20
	DefaultPairTimeout      = 120 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultPingInterval     = 30 * time.Second
	DefaultPingTimeout      = 15 * time.Second
	DefaultWriteTimeout     = 60 * time.Second
	DefaultReapInterval     = 5 * time.Second
	DefaultCloseRetention   = 120 * time.Second
	DefaultQueueLen         = 256
	DefaultMaxViewers       = 8
	DefaultOpenRateBurst    = 60
	DefaultOpenRatePerSec   = 10
	DefaultReplicaHeartbeat = 2 * time.Second
)

// DefaultOptions returns the reference defaults.
func DefaultOptions() Options {
	return Options{
		Bind:             DefaultBind,
		RingFrames:       DefaultRingFrames,
		SpliceBuffer:     DefaultSpliceBuffer,
		RateBurstBytes:   DefaultRateBurstBytes,
		RateBytesPerSec:  DefaultRateBytesPerSec,
		PairTimeout:      DefaultPairTimeout,
		HandshakeTimeout: DefaultHandshakeTimeout,
		PingInterval:     DefaultPingInterval,
		PingTimeout:      DefaultPingTimeout,
		WriteTimeout:     DefaultWriteTimeout,
		ReapInterval:     DefaultReapInterval,
		CloseRetention:   DefaultCloseRetention,
		QueueLen:         DefaultQueueLen,
		MaxViewers:       DefaultMaxViewers,
		OpenRateBurst:    DefaultOpenRateBurst,
		OpenRatePerSec:   DefaultOpenRatePerSec,
	}
}

// TestOptions mirrors the reference RelayConfig::for_test: loopback on a
// random port, both secrets = secret, ring 64, splice 16, 1 MiB burst,
// 1 MiB/s, pair timeout 5 s. The per-IP open limit is off (every test
// client is 127.0.0.1).
func TestOptions(secret string) Options {
	o := DefaultOptions()
	o.Bind = "127.0.0.1:0"
	o.StreamTokenSecret = secret
	o.RelayTokenSecret = secret
	o.RingFrames = 64
	o.SpliceBuffer = 16
	o.RateBurstBytes = 1 << 20
	o.RateBytesPerSec = 1 << 20
	o.PairTimeout = 5 * time.Second
	o.OpenRateBurst = 0
	return o
}

// AgentSecret is the key for ogr_ tokens: the relay secret, or the stream
// secret when the relay secret is empty.
func (o *Options) AgentSecret() string {
	if o.RelayTokenSecret != "" {
		return o.RelayTokenSecret
	}
	return o.StreamTokenSecret
}

// withDefaults fills zero values that have no meaning as zero.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.RingFrames <= 0 {
		o.RingFrames = 1
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = d.HandshakeTimeout
	}
	if o.PingTimeout <= 0 {
		o.PingTimeout = d.PingTimeout
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	if o.ReapInterval <= 0 {
		o.ReapInterval = d.ReapInterval
	}
	if o.CloseRetention <= 0 {
		o.CloseRetention = d.CloseRetention
	}
	if o.QueueLen <= 0 {
		o.QueueLen = d.QueueLen
	}
	if o.ReplicaHeartbeat <= 0 {
		o.ReplicaHeartbeat = DefaultReplicaHeartbeat
	}
	if o.PeerTimeout <= 0 {
		o.PeerTimeout = 3 * o.ReplicaHeartbeat
	}
	if o.MaxViewers <= 0 {
		o.MaxViewers = d.MaxViewers
	}
	if o.Clock == nil {
		o.Clock = quartz.NewReal()
	}
	if o.Now == nil {
		clk := o.Clock
		o.Now = func() time.Time { return clk.Now() }
	}
	return o
}
