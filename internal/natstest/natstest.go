// Package natstest starts real, in-process nats-servers for tests: a random
// loopback port, no signal handlers, shut down with the test.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/internal/testutil"
)

// Option adjusts the server options before start.
type Option func(*server.Options)

// MaxPayload sets the server's max payload (bytes).
func MaxPayload(n int32) Option { return func(o *server.Options) { o.MaxPayload = n } }

// Port pins the listen port (for restart tests); the default is random.
func Port(p int) Option { return func(o *server.Options) { o.Port = p } }

// Start runs a nats-server on 127.0.0.1 until the test ends.
func Start(tb testing.TB, opts ...Option) *server.Server {
	tb.Helper()
	s := Run(tb, opts...)
	tb.Cleanup(s.Shutdown)
	return s
}

// Run starts a server the caller shuts down (to test an agent riding out an
// outage).
func Run(tb testing.TB, opts ...Option) *server.Server {
	tb.Helper()
	o := &server.Options{
		Host:   "127.0.0.1",
		Port:   server.RANDOM_PORT,
		NoLog:  true,
		NoSigs: true,
	}
	for _, opt := range opts {
		opt(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		tb.Fatalf("nats-server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server did not become ready")
	}
	return s
}

// Connect opens a client connection to s, closed with the test.
func Connect(tb testing.TB, s *server.Server, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), opts...)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Eventually polls cond every 10ms until it holds or the timeout passes
// (nats-server's checkFor): tests wait on conditions, never on sleeps.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	testutil.Eventually(tb, timeout, cond)
}
