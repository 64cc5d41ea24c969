package revocation

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"testing"
)

func TestConfigFlagsAndEnv(t *testing.T) {
	var c Config
	c.ApplyEnv(func(k string) string {
		return map[string]string{EnvNATSURL: "nats://env:4222", EnvNATSUser: "relay", EnvNATSPassword: "pw"}[k]
	})
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	if err := fs.Parse([]string{"-nats-url", "nats://flag:4222"}); err != nil {
		t.Fatal(err)
	}
	if !c.Enabled() || c.URL != "nats://flag:4222" || c.User != "relay" || c.Password != "pw" || c.Bucket != "opengeni_enrollments" {
		t.Fatalf("%+v", c)
	}
	for _, bad := range []Config{{User: "u", Token: "t"}, {Token: "t", Creds: "c"}, {User: "u", Creds: "c"}} {
		if _, err := bad.Options(slog.New(slog.DiscardHandler)); err == nil {
			t.Fatalf("%+v: want an error", bad)
		}
	}
	if (&Config{}).Enabled() {
		t.Fatal("no URL: enabled")
	}
}

// An unreachable NATS at start is not fatal: the relay runs and refuses
// agents (fail closed) while it retries.
func TestConnectUnreachableFailsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := Config{URL: "nats://" + addr, User: "relay", Password: "pw"}
	w, stop, err := c.Connect(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if _, err := w.Revoked("ws", "agent"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Revoked: %v, want ErrUnavailable", err)
	}
}
