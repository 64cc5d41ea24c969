package stream_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
)

// A channel whose re-registration the relay refuses: Flush returns the
// refusal instead of waiting out its context, LastError says why, and a
// later accepted re-registration clears it and ships the frames.
func TestFlushFailsFastWhenReRegistrationIsRefused(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	d := r.Dialer()
	good := d.Token
	var refuse atomic.Bool
	d.TokenFunc = func() string {
		if refuse.Load() {
			return "ogr_revoked"
		}
		return good
	}
	d.CloseGrace = 2 * time.Second
	ch := open(t, d)
	if err := ch.LastError(); err != nil {
		t.Fatalf("LastError of a registered channel: %v", err)
	}
	refuse.Store(true)
	r.Restart()
	// Once the loss is seen, nothing ships until a re-registration is accepted.
	streamtest.Eventually(t, "the channel saw its connection go", func() bool { return ch.LastError() != nil })
	send(t, ch, "after-restart")

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // a hang fails by the test timeout
	defer cancel()
	err := ch.Flush(ctx)
	var rej *stream.RejectedError
	if !errors.As(err, &rej) {
		t.Fatalf("Flush = %v, want the relay's *RejectedError", err)
	}
	if !errors.As(ch.LastError(), &rej) {
		t.Fatalf("LastError = %v", ch.LastError())
	}

	refuse.Store(false) // the token is re-minted: the channel comes back and the frame ships
	streamtest.Eventually(t, "re-registered and flushed", func() bool {
		return ch.LastError() == nil && ch.Flush(context.Background()) == nil
	})
}
