package control

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/internal/natstest"
)

// BenchmarkRawNATSRoundTrip is the floor: a plain nc.Request echo between two
// connections on an in-process server.
func BenchmarkRawNATSRoundTrip(b *testing.B) {
	srv := natstest.Start(b)
	responder := natstest.Connect(b, srv)
	sub, err := responder.Subscribe("bench.echo", func(m *nats.Msg) { m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	responder.Flush()
	nc := natstest.Connect(b, srv)
	payload := make([]byte, 64)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := nc.Request("bench.echo", payload, 5*time.Second); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSessionPingMock is a Session.Ping through NATSRPC to the mock agent
// on the same kind of server: protobuf, request ids, the envelope.
func BenchmarkSessionPingMock(b *testing.B) {
	f := newFixture(b, newMock(""))
	s := f.session(b)
	ctx := context.Background()
	if !s.Ping(ctx) {
		b.Fatal("ping failed")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !s.Ping(ctx) {
			b.Fatal("ping failed")
		}
	}
}
