package main

import (
	"flag"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/relay"
)

// Every env var and every flag of `relay serve` lands in its Options field,
// a flag overrides its env var, and the defaults are the reference ones.
func TestServeEnvAndFlagsMapToOptions(t *testing.T) {
	cidr := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.0/24")}
	tests := []struct {
		name      string
		env, flag string // the env var and the flag (without dashes)
		value     string
		get       func(relay.Options) any
		want      any
	}{
		{"bind", envBind, "bind", "127.0.0.1:9999", func(o relay.Options) any { return o.Bind }, "127.0.0.1:9999"},
		{"stream secret", envStreamSecret, "stream-token-secret", "s1", func(o relay.Options) any { return o.StreamTokenSecret }, "s1"},
		{"relay secret", envRelaySecret, "relay-token-secret", "r1", func(o relay.Options) any { return o.RelayTokenSecret }, "r1"},
		{"ring", envRingFrames, "ring-frames", "32", func(o relay.Options) any { return o.RingFrames }, 32},
		{"splice", envSpliceBuffer, "splice-buffer", "3", func(o relay.Options) any { return o.SpliceBuffer }, 3},
		{"burst", envRateBurstBytes, "rate-burst-bytes", "100", func(o relay.Options) any { return o.RateBurstBytes }, uint64(100)},
		{"rate", envRateBytesPerSec, "rate-bytes-per-sec", "10", func(o relay.Options) any { return o.RateBytesPerSec }, uint64(10)},
		{"pair timeout", envPairTimeoutSecs, "pair-timeout-secs", "7", func(o relay.Options) any { return o.PairTimeout }, 7 * time.Second},
		{"handshake", envHandshakeTimeout, "handshake-timeout-secs", "4", func(o relay.Options) any { return o.HandshakeTimeout }, 4 * time.Second},
		{"ping", envPingInterval, "ping-interval-secs", "0", func(o relay.Options) any { return o.PingInterval }, time.Duration(0)},
		{"open burst", envOpenRateBurst, "open-rate-burst", "5", func(o relay.Options) any { return o.OpenRateBurst }, 5},
		{"open rate", envOpenRatePerSec, "open-rate-per-sec", "2", func(o relay.Options) any { return o.OpenRatePerSec }, 2},
		{"proxies", envTrustedProxies, "trusted-proxies", "10.0.0.0/8,192.168.1.0/24", func(o relay.Options) any { return o.TrustedProxies }, cidr},
	}
	parse := func(t *testing.T, env map[string]string, args ...string) relay.Options {
		t.Helper()
		o := relay.DefaultOptions()
		if err := applyServeEnv(&o, func(k string) string { return env[k] }); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		registerServeFlags(&o, fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return o
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			def := tc.get(relay.DefaultOptions())
			if got := tc.get(parse(t, map[string]string{tc.env: tc.value})); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("env %s=%s: got %v, want %v", tc.env, tc.value, got, tc.want)
			}
			if got := tc.get(parse(t, nil, "--"+tc.flag, tc.value)); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("flag --%s %s: got %v, want %v", tc.flag, tc.value, got, tc.want)
			}
			if got := tc.get(parse(t, nil)); !reflect.DeepEqual(got, def) {
				t.Errorf("neither set: got %v, want the default %v", got, def)
			}
			// A flag wins over its env var, which would give the default back.
			envOnly := map[string]string{tc.env: tc.value}
			fs := flag.NewFlagSet("probe", flag.ContinueOnError)
			o := relay.DefaultOptions()
			registerServeFlags(&o, fs)
			defText := fs.Lookup(tc.flag).DefValue
			if got := tc.get(parse(t, envOnly, "-"+tc.flag+"="+defText)); !reflect.DeepEqual(got, def) && defText != "" {
				t.Errorf("flag -%s=%s over env %s: got %v, want %v", tc.flag, defText, tc.value, got, def)
			}
		})
	}
}

func TestServeEnvErrorsNameTheVariable(t *testing.T) {
	for _, name := range []string{envRingFrames, envRateBurstBytes, envPairTimeoutSecs, envTrustedProxies} {
		o := relay.DefaultOptions()
		err := applyServeEnv(&o, func(k string) string {
			if k == name {
				return "many/x"
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: err %v, want one naming the variable", name, err)
		}
	}
}

func TestServeDefaultsAreTheReference(t *testing.T) {
	d := relay.DefaultOptions()
	if d.Bind != "0.0.0.0:8443" || d.RingFrames != 1024 || d.SpliceBuffer != 256 || d.RateBurstBytes != 16777216 ||
		d.RateBytesPerSec != 8388608 || d.PairTimeout != 120*time.Second || d.HandshakeTimeout != 10*time.Second ||
		d.PingInterval != 30*time.Second || d.OpenRateBurst != 60 || d.OpenRatePerSec != 10 {
		t.Fatalf("defaults %+v", d)
	}
}

func TestServeReplicasFlag(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want bool
	}{
		{"", nil, false},
		{"1", nil, true},
		{"true", nil, true},
		{"1", []string{"-replicas=false"}, false},
		{"", []string{"-replicas"}, true},
	} {
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		on := registerReplicasFlag(fs, func(k string) string {
			if k == envReplicas {
				return tc.env
			}
			return ""
		})
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if *on != tc.want {
			t.Errorf("env %q args %v: %v, want %v", tc.env, tc.args, *on, tc.want)
		}
	}
}
