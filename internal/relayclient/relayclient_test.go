package relayclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/relayclient"
	"github.com/opengeni/opengeni-agent/internal/streamtest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/frame"
	"github.com/opengeni/opengeni-agent/relay/token"
)

func channel() *agentpb.StreamChannel {
	return &agentpb.StreamChannel{ChannelId: "ch-relayclient", WorkspaceId: streamtest.Workspace,
		AgentId: streamtest.Agent, Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: stream.PortPTY}
}

func agentToken(t *testing.T, secret string) string {
	t.Helper()
	tok, err := token.MintAgent(secret, token.AgentClaims{WorkspaceID: streamtest.Workspace, AgentID: streamtest.Agent}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Against a real relay on loopback: an accepted open returns a live socket
// and the ack echoing the presented cursor; a refused one is the one typed
// refusal both the agent (stream.RejectedError) and the control library
// (control.StreamRejectedError) expose.
func TestOpenAgainstRelay(t *testing.T) {
	r := streamtest.StartRelay(t, nil)
	url := stream.DialURL(r.URL(), channel())
	tests := []struct {
		name       string
		token      string
		wantResume uint64
		wantReject bool
	}{
		{name: "accepted", token: agentToken(t, streamtest.Secret), wantResume: 5},
		{name: "wrong secret", token: agentToken(t, "not-the-relay-secret"), wantReject: true},
		{name: "not a token", token: "ogr_garbage", wantReject: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), streamtest.Deadline)
			defer cancel()
			open := &agentpb.StreamOpen{Channel: channel(), Token: tt.token,
				Role: agentpb.StreamRole_STREAM_ROLE_AGENT, ResumeFromSeq: tt.wantResume}
			ws, ack, err := relayclient.Open(ctx, url, nil, open)
			if tt.wantReject {
				var rej *relayclient.RejectedError
				var agentRej *stream.RejectedError
				var controlRej *control.StreamRejectedError
				if !errors.As(err, &rej) || !errors.As(err, &agentRej) || !errors.As(err, &controlRej) || rej.Message == "" {
					t.Fatalf("Open = %v, want a *RejectedError with the relay's reason", err)
				}
				if !relayclient.IsRefusal(err) || ws != nil {
					t.Fatalf("refusal: IsRefusal %v, socket %v", relayclient.IsRefusal(err), ws)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			if !ack.GetAccepted() || ack.GetResumeFromSeq() != tt.wantResume {
				t.Fatalf("ack = %v, want accepted resuming at %d", ack, tt.wantResume)
			}
		})
	}
}

// fakeRelay answers every socket with answer (nil: close before answering).
func fakeRelay(t *testing.T, answer func(ctx context.Context, ws *websocket.Conn)) string {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		if _, _, err := frame.ReadFrame(r.Context(), ws); err != nil {
			return
		}
		answer(r.Context(), ws)
	}))
	t.Cleanup(hs.Close)
	return "ws" + strings.TrimPrefix(hs.URL, "http")
}

// A peer that is not a relay: a wrong first answer is a *ProtocolError (a
// refusal), a close before the ack and an unreachable address are
// transport errors (worth retrying).
func TestOpenRefusalsAndTransportErrors(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := "ws://" + closed.Addr().String() + "/stream"
	closed.Close()
	tests := []struct {
		name        string
		url         string
		wantRefusal bool
		wantIs      error
	}{
		{name: "frame instead of ack", wantRefusal: true, url: fakeRelay(t, func(ctx context.Context, ws *websocket.Conn) {
			_ = frame.WriteFrame(ctx, ws, &agentpb.StreamFrame{ChannelId: "x", Data: []byte("hi")})
		})},
		{name: "undecodable ack", wantRefusal: true, url: fakeRelay(t, func(ctx context.Context, ws *websocket.Conn) {
			_ = ws.Write(ctx, websocket.MessageBinary, []byte{byte(frame.TagOpenAck), 0xff, 0xff, 0xff})
		})},
		{name: "closed before ack", wantIs: relayclient.ErrClosedBeforeAck, url: fakeRelay(t, func(ctx context.Context, ws *websocket.Conn) {
			ws.Close(websocket.StatusNormalClosure, "")
		})},
		{name: "nothing listening", url: deadAddr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), streamtest.Deadline)
			defer cancel()
			open := &agentpb.StreamOpen{Channel: channel(), Token: "ogr_x", Role: agentpb.StreamRole_STREAM_ROLE_AGENT}
			ws, _, err := relayclient.Open(ctx, tt.url, nil, open)
			if err == nil || ws != nil {
				t.Fatalf("Open = %v, %v; want an error and no socket", ws, err)
			}
			var perr *relayclient.ProtocolError
			if relayclient.IsRefusal(err) != tt.wantRefusal || errors.As(err, &perr) != tt.wantRefusal {
				t.Fatalf("Open = %v (%T): refusal %v, want %v", err, err, relayclient.IsRefusal(err), tt.wantRefusal)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Fatalf("Open = %v, want %v", err, tt.wantIs)
			}
		})
	}
}
