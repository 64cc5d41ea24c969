package agent

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	"github.com/opengeni/opengeni-agent/internal/syncbuf"
)

// A machine that cannot get on NATS says so: "connecting" first, then every
// failed attempt's cause and the next retry (throttled), and the live state
// says retrying with the last error; never "connected".
func TestUnreachableNATSIsReported(t *testing.T) {
	logs := &syncbuf.Buffer{}
	states := make(chan ConnState, 64)
	ra := startAgent(t, "nats://127.0.0.1:"+itoa(freePort(t)), func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.OnState = func(s ConnState) {
			select {
			case states <- s:
			default:
			}
		}
	})
	natstest.Eventually(t, 20*time.Second, func() error {
		if st := ra.State(); st.State != StateRetrying || !strings.Contains(st.LastError, "connection refused") || st.NextRetry.IsZero() {
			return errf("state %+v", st)
		}
		return nil
	})
	out := logs.String()
	for _, want := range []string{`msg="connecting to NATS"`, `msg="cannot connect to NATS; retrying"`, "connection refused", "next_retry_in="} {
		if !strings.Contains(out, want) {
			t.Fatalf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "agent connected") {
		t.Fatalf("said connected:\n%s", out)
	}
	if first := <-states; first.State != StateConnecting {
		t.Fatalf("first state %+v", first)
	}
}

// A refused bearer is named, with the exact command that pairs the machine
// again, and the state says denied.
func TestRefusedBearerSaysHowToFixIt(t *testing.T) {
	s := natstest.Start(t, func(o *server.Options) { o.Authorization = "the-right-token" })
	logs := &syncbuf.Buffer{}
	ra := startAgent(t, s.ClientURL(), func(o *Options) {
		o.Token = "oge_stale"
		o.APIURL = "https://platform.example"
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	natstest.Eventually(t, 20*time.Second, func() error {
		if st := ra.State(); st.State != StateDenied {
			return errf("state %+v", st)
		}
		return nil
	})
	want := "opengeni-agent connect --force --api-url https://platform.example --workspace-id " + testWS
	natstest.Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), want) {
			return errf("no fix command in the log yet")
		}
		return nil
	})
	if strings.Contains(logs.String(), "oge_stale") {
		t.Fatal("the bearer reached the log")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
