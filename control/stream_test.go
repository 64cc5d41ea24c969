package control

import (
	"context"
	"errors"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/token"
)

func TestMintViewerTokenVerifies(t *testing.T) {
	tok, exp, err := MintViewerToken([]byte("s3cret"), StreamTokenClaims{
		WorkspaceID: "11111111-1111-4111-8111-111111111111", SessionID: "22222222-2222-4222-8222-222222222222",
		ViewerID: "configured:key", LeaseEpoch: 9, Mode: StreamModeControl, Port: TerminalStreamPort,
		AgentID: "44444444-4444-4444-8444-444444444444",
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 110*time.Second || d > 121*time.Second {
		t.Fatalf("exp in %v, want ~120s", d)
	}
	c, err := token.VerifyViewer("s3cret", tok, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if c.LeaseEpoch != 9 || c.Port != 7681 || c.Mode != "control" || c.Exp != exp.Unix() || c.ViewerID != StreamViewerID("configured:key") ||
		c.AgentID != "44444444-4444-4444-8444-444444444444" {
		t.Fatalf("claims %+v", c)
	}
	if _, err := token.VerifyViewer("other", tok, time.Now()); !errors.Is(err, token.ErrBadSignature) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, _, err := MintViewerToken(nil, StreamTokenClaims{WorkspaceID: "w"}, 0); err == nil {
		t.Fatal("minted without a secret")
	}
}

func TestStreamViewerID(t *testing.T) {
	const u = "33333333-3333-4333-8333-333333333333"
	if StreamViewerID(u) != u {
		t.Fatal("a UUID is not kept")
	}
	// sha256("opengeni:stream-viewer:configured:key"), digit 12 := 5, digit 16 := (d&3)|8.
	if got := StreamViewerID("configured:key"); got != "61d01065-db3f-5841-9b02-6f7387451a3f" {
		t.Fatalf("StreamViewerID = %s", got)
	}
	a, b := StreamViewerID("configured:key"), StreamViewerID("configured:key")
	if a != b || a == StreamViewerID("other") {
		t.Fatal("not deterministic per input")
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(a) {
		t.Fatalf("%q is not a v5-shaped UUID", a)
	}
}

// A viewer with a bad token is rejected with the relay's exact message.
func TestDialStreamRejected(t *testing.T) {
	srv, err := relay.New(relay.TestOptions("right"), nil)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	defer srv.Close()
	ch := &agentpb.StreamChannel{ChannelId: "ch-1", WorkspaceId: "w1", AgentId: "a1", Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: 7681}
	url := "ws" + strings.TrimPrefix(hs.URL, "http") + "/stream?ws=w1&agent=a1&port=7681&channel=ch-1"
	mint := func(secret string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) {
			tok, _, err := MintViewerToken([]byte(secret), StreamTokenClaims{WorkspaceID: "w1", Port: 7681}, 0)
			return tok, err
		}
	}
	_, err = DialStream(context.Background(), ViewerOptions{URL: url, Channel: ch, Token: mint("wrong")})
	var rej *StreamRejectedError
	if !errors.As(err, &rej) || rej.Message != "viewer token: token signature is invalid" {
		t.Fatalf("err = %v", err)
	}
	v, err := DialStream(context.Background(), ViewerOptions{URL: url, Channel: ch, Token: mint("right")})
	if err != nil {
		t.Fatal(err)
	}
	if !v.Connected() {
		t.Fatal("not connected")
	}
	v.Close()
	if _, ok := <-v.Output(); ok || v.Err() != nil {
		t.Fatalf("after Close: output open or err %v", v.Err())
	}
}
