package relay

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/coder/quartz"

	"github.com/opengeni/opengeni-agent/internal/iplimit"
)

// Options configures a relay Server. DefaultOptions gives the reference
// defaults of relay.md §1.1; ApplyEnv and RegisterFlags let cmd/relay layer
// env vars and then CLI flags on top (a flag overrides its env var).
type Options struct {
	// Bind is the listen host:port (--bind, OPENGENI_RELAY_BIND).
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
)

// Env var names (relay.md §1.1), plus ours for the §10 additions.
const (
	EnvBind             = "OPENGENI_RELAY_BIND"
	EnvStreamSecret     = "OPENGENI_STREAM_TOKEN_SECRET"
	EnvRelaySecret      = "OPENGENI_RELAY_TOKEN_SECRET"
	EnvRingFrames       = "OPENGENI_RELAY_RING_FRAMES"
	EnvSpliceBuffer     = "OPENGENI_RELAY_SPLICE_BUFFER"
	EnvRateBurstBytes   = "OPENGENI_RELAY_RATE_BURST_BYTES"
	EnvRateBytesPerSec  = "OPENGENI_RELAY_RATE_BYTES_PER_SEC"
	EnvPairTimeoutSecs  = "OPENGENI_RELAY_PAIR_TIMEOUT_SECS"
	EnvHandshakeTimeout = "OPENGENI_RELAY_HANDSHAKE_TIMEOUT_SECS"
	EnvPingInterval     = "OPENGENI_RELAY_PING_INTERVAL_SECS"
	EnvOpenRateBurst    = "OPENGENI_RELAY_OPEN_RATE_BURST"
	EnvOpenRatePerSec   = "OPENGENI_RELAY_OPEN_RATE_PER_SEC"
	EnvTrustedProxies   = "OPENGENI_RELAY_TRUSTED_PROXIES"
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

// ApplyEnv overrides o's fields from the environment (getenv is usually
// os.Getenv). Unset or empty variables leave a field alone.
func (o *Options) ApplyEnv(getenv func(string) string) error {
	var errs []error
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	num := func(name string, set func(string) error) {
		if v := getenv(name); v != "" {
			if err := set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	str(EnvBind, &o.Bind)
	str(EnvStreamSecret, &o.StreamTokenSecret)
	str(EnvRelaySecret, &o.RelayTokenSecret)
	num(EnvRingFrames, (*intValue)(&o.RingFrames).Set)
	num(EnvSpliceBuffer, (*intValue)(&o.SpliceBuffer).Set)
	num(EnvRateBurstBytes, (*uintValue)(&o.RateBurstBytes).Set)
	num(EnvRateBytesPerSec, (*uintValue)(&o.RateBytesPerSec).Set)
	num(EnvPairTimeoutSecs, (*secsValue)(&o.PairTimeout).Set)
	num(EnvHandshakeTimeout, (*secsValue)(&o.HandshakeTimeout).Set)
	num(EnvPingInterval, (*secsValue)(&o.PingInterval).Set)
	num(EnvOpenRateBurst, (*intValue)(&o.OpenRateBurst).Set)
	num(EnvOpenRatePerSec, (*intValue)(&o.OpenRatePerSec).Set)
	num(EnvTrustedProxies, (*prefixesValue)(&o.TrustedProxies).Set)
	return errors.Join(errs...)
}

// RegisterFlags binds the reference CLI flags to o, with o's current values
// as defaults (so call ApplyEnv first: a flag then overrides its env var).
// Go's flag package accepts both -bind and --bind.
func (o *Options) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Bind, "bind", o.Bind, "listen host:port (env "+EnvBind+")")
	fs.StringVar(&o.StreamTokenSecret, "stream-token-secret", o.StreamTokenSecret,
		"HMAC key for viewer ogs_ tokens (env "+EnvStreamSecret+")")
	fs.StringVar(&o.RelayTokenSecret, "relay-token-secret", o.RelayTokenSecret,
		"HMAC key for agent ogr_ tokens; empty falls back to the stream secret (env "+EnvRelaySecret+")")
	fs.Var((*intValue)(&o.RingFrames), "ring-frames", "replay ring capacity per channel direction, frames (env "+EnvRingFrames+")")
	fs.Var((*intValue)(&o.SpliceBuffer), "splice-buffer", "parsed for compatibility, unused (env "+EnvSpliceBuffer+")")
	fs.Var((*uintValue)(&o.RateBurstBytes), "rate-burst-bytes", "leaky-bucket capacity (env "+EnvRateBurstBytes+")")
	fs.Var((*uintValue)(&o.RateBytesPerSec), "rate-bytes-per-sec", "leaky-bucket refill (env "+EnvRateBytesPerSec+")")
	fs.Var((*secsValue)(&o.PairTimeout), "pair-timeout-secs", "half-open channel reaping age, seconds (env "+EnvPairTimeoutSecs+")")
	fs.Var((*secsValue)(&o.HandshakeTimeout), "handshake-timeout-secs", "max wait for StreamOpen, seconds (env "+EnvHandshakeTimeout+")")
	fs.Var((*secsValue)(&o.PingInterval), "ping-interval-secs", "keepalive ping period, seconds; 0 disables (env "+EnvPingInterval+")")
	fs.Var((*intValue)(&o.OpenRateBurst), "open-rate-burst", "stream opens per client IP in a burst; 0 disables the limit (env "+EnvOpenRateBurst+")")
	fs.Var((*intValue)(&o.OpenRatePerSec), "open-rate-per-sec", "stream opens per client IP per second, sustained (env "+EnvOpenRatePerSec+")")
	fs.Var((*prefixesValue)(&o.TrustedProxies), "trusted-proxies",
		"comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client; others are keyed by socket address (env "+EnvTrustedProxies+")")
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

type intValue int

func (v *intValue) String() string { return strconv.Itoa(int(*v)) }
func (v *intValue) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 0)
	if err != nil || n < 0 {
		return fmt.Errorf("want a non-negative integer, got %q", s)
	}
	*v = intValue(n)
	return nil
}

type uintValue uint64

func (v *uintValue) String() string { return strconv.FormatUint(uint64(*v), 10) }
func (v *uintValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("want a non-negative integer, got %q", s)
	}
	*v = uintValue(n)
	return nil
}

// prefixesValue is a comma-separated CIDR list.
type prefixesValue []netip.Prefix

func (v *prefixesValue) String() string {
	s := make([]string, len(*v))
	for i, p := range *v {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
func (v *prefixesValue) Set(s string) error {
	ps, err := iplimit.ParsePrefixes(s)
	if err != nil {
		return err
	}
	*v = ps
	return nil
}

// secsValue is a duration written as whole seconds on the command line.
type secsValue time.Duration

func (v *secsValue) String() string {
	return strconv.FormatInt(int64(time.Duration(*v)/time.Second), 10)
}
func (v *secsValue) Set(s string) error {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("want whole seconds, got %q", s)
	}
	*v = secsValue(time.Duration(n) * time.Second)
	return nil
}
