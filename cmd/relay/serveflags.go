package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/internal/iplimit"
	"github.com/opengeni/opengeni-agent/relay"
)

// Env var names of `relay serve` (relay.md §1.1), plus ours for the §10
// additions. A CLI flag overrides its env var.
const (
	envBind             = "OPENGENI_RELAY_BIND"
	envStreamSecret     = "OPENGENI_STREAM_TOKEN_SECRET"
	envRelaySecret      = "OPENGENI_RELAY_TOKEN_SECRET"
	envRingFrames       = "OPENGENI_RELAY_RING_FRAMES"
	envSpliceBuffer     = "OPENGENI_RELAY_SPLICE_BUFFER"
	envRateBurstBytes   = "OPENGENI_RELAY_RATE_BURST_BYTES"
	envRateBytesPerSec  = "OPENGENI_RELAY_RATE_BYTES_PER_SEC"
	envPairTimeoutSecs  = "OPENGENI_RELAY_PAIR_TIMEOUT_SECS"
	envHandshakeTimeout = "OPENGENI_RELAY_HANDSHAKE_TIMEOUT_SECS"
	envPingInterval     = "OPENGENI_RELAY_PING_INTERVAL_SECS"
	envOpenRateBurst    = "OPENGENI_RELAY_OPEN_RATE_BURST"
	envOpenRatePerSec   = "OPENGENI_RELAY_OPEN_RATE_PER_SEC"
	envTrustedProxies   = "OPENGENI_RELAY_TRUSTED_PROXIES"
	envReplicas         = "OPENGENI_RELAY_REPLICAS"
)

// registerReplicasFlag binds -replicas, defaulting to its env var ("1" or
// "true" turn it on).
func registerReplicasFlag(fs *flag.FlagSet, getenv func(string) string) *bool {
	on, _ := strconv.ParseBool(getenv(envReplicas))
	return fs.Bool("replicas", on, "route channels between relay replicas through the NATS of -nats-url, so no ingress affinity is needed (env "+envReplicas+")")
}

// applyServeEnv overrides o's fields from the environment (getenv is usually
// os.Getenv). Unset or empty variables leave a field alone.
func applyServeEnv(o *relay.Options, getenv func(string) string) error {
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
	str(envBind, &o.Bind)
	str(envStreamSecret, &o.StreamTokenSecret)
	str(envRelaySecret, &o.RelayTokenSecret)
	num(envRingFrames, (*intValue)(&o.RingFrames).Set)
	num(envSpliceBuffer, (*intValue)(&o.SpliceBuffer).Set)
	num(envRateBurstBytes, (*uintValue)(&o.RateBurstBytes).Set)
	num(envRateBytesPerSec, (*uintValue)(&o.RateBytesPerSec).Set)
	num(envPairTimeoutSecs, (*secsValue)(&o.PairTimeout).Set)
	num(envHandshakeTimeout, (*secsValue)(&o.HandshakeTimeout).Set)
	num(envPingInterval, (*secsValue)(&o.PingInterval).Set)
	num(envOpenRateBurst, (*intValue)(&o.OpenRateBurst).Set)
	num(envOpenRatePerSec, (*intValue)(&o.OpenRatePerSec).Set)
	num(envTrustedProxies, (*prefixesValue)(&o.TrustedProxies).Set)
	return errors.Join(errs...)
}

// registerServeFlags binds the reference CLI flags to o, with o's current
// values as defaults (so call applyServeEnv first: a flag then overrides its
// env var). Go's flag package accepts both -bind and --bind.
func registerServeFlags(o *relay.Options, fs *flag.FlagSet) {
	fs.StringVar(&o.Bind, "bind", o.Bind, "listen host:port (env "+envBind+")")
	fs.StringVar(&o.StreamTokenSecret, "stream-token-secret", o.StreamTokenSecret,
		"HMAC key for viewer ogs_ tokens (env "+envStreamSecret+")")
	fs.StringVar(&o.RelayTokenSecret, "relay-token-secret", o.RelayTokenSecret,
		"HMAC key for agent ogr_ tokens; empty falls back to the stream secret (env "+envRelaySecret+")")
	fs.Var((*intValue)(&o.RingFrames), "ring-frames", "replay ring capacity per channel direction, frames (env "+envRingFrames+")")
	fs.Var((*intValue)(&o.SpliceBuffer), "splice-buffer", "parsed for compatibility, unused (env "+envSpliceBuffer+")")
	fs.Var((*uintValue)(&o.RateBurstBytes), "rate-burst-bytes", "leaky-bucket capacity (env "+envRateBurstBytes+")")
	fs.Var((*uintValue)(&o.RateBytesPerSec), "rate-bytes-per-sec", "leaky-bucket refill (env "+envRateBytesPerSec+")")
	fs.Var((*secsValue)(&o.PairTimeout), "pair-timeout-secs", "half-open channel reaping age, seconds (env "+envPairTimeoutSecs+")")
	fs.Var((*secsValue)(&o.HandshakeTimeout), "handshake-timeout-secs", "max wait for StreamOpen, seconds (env "+envHandshakeTimeout+")")
	fs.Var((*secsValue)(&o.PingInterval), "ping-interval-secs", "keepalive ping period, seconds; 0 disables (env "+envPingInterval+")")
	fs.Var((*intValue)(&o.OpenRateBurst), "open-rate-burst", "stream opens per client IP in a burst; 0 disables the limit (env "+envOpenRateBurst+")")
	fs.Var((*intValue)(&o.OpenRatePerSec), "open-rate-per-sec", "stream opens per client IP per second, sustained (env "+envOpenRatePerSec+")")
	fs.Var((*prefixesValue)(&o.TrustedProxies), "trusted-proxies",
		"comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client; others are keyed by socket address (env "+envTrustedProxies+")")
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
