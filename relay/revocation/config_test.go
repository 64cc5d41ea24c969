package revocation

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
)

func TestConfigOptions(t *testing.T) {
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
