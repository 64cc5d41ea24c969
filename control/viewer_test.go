package control

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay"
)

// A viewer of a channel no producer ever joins (its close was lost, e.g. in
// a relay restart) is reaped by the relay again and again; once no output
// has come for ReconnectFor it ends with the relay's close instead of
// reconnecting forever (`relay ctl shell` would never return).
func TestViewerEndsWhenNoProducerComes(t *testing.T) {
	o := relay.TestOptions("right")
	o.PairTimeout = 20 * time.Millisecond
	o.ReapInterval = 5 * time.Millisecond
	srv, err := relay.New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ch := &agentpb.StreamChannel{ChannelId: "ch-1", WorkspaceId: "w1", AgentId: "a1", Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: 7681}
	v, err := DialStream(context.Background(), ViewerOptions{
		URL:     "ws" + strings.TrimPrefix(hs.URL, "http") + "/stream?ws=w1&agent=a1&port=7681&channel=ch-1",
		Channel: ch,
		Token: func(context.Context) (string, error) {
			tok, _, err := MintViewerToken([]byte("right"), StreamTokenClaims{WorkspaceID: "w1", Port: 7681}, 0)
			return tok, err
		},
		ReconnectFor: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	select {
	case <-v.Done():
	case <-time.After(20 * time.Second):
		t.Fatalf("the viewer still waits for a producer (connects %d)", v.Stats().Connects)
	}
	var closed *StreamClosedError
	if err := v.Err(); !errors.As(err, &closed) || closed.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_TRANSPORT_ERROR {
		t.Fatalf("err = %v, want the relay's reaping close", err)
	}
	if _, ok := <-v.Output(); ok {
		t.Fatal("output still open")
	}
}
