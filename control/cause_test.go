package control

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// deadNATSURL is a loopback port nothing listens on.
func deadNATSURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + ln.Addr().String()
	ln.Close()
	return url
}

// An AGENT_OFFLINE synthesized for a transport failure keeps its cause
// (errors.Is reaches the nats.go error) while what the caller sees of the
// wire error stays control.md §2.2's.
func TestOfflineKeepsTransportCause(t *testing.T) {
	authSrv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "control", "right" })
	plain := natstest.Start(t)
	for _, tc := range []struct {
		name    string
		factory ConnFactory
		want    error
	}{
		{"no server", DialNATS(deadNATSURL(t)), nats.ErrNoServers},
		{"refused credential", DialNATS(authSrv.ClientURL(), nats.UserInfo("control", "wrong")), nats.ErrAuthorization},
		{"no responders", DialNATS(plain.ClientURL()), nats.ErrNoResponders},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rpc := NewNATSRPC(tc.factory)
			defer rpc.Close()
			s, err := NewSession(SessionConfig{WorkspaceID: "ws", AgentID: "a1", RPC: rpc})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.Metrics(context.Background())
			var ce *Error
			if !errors.As(err, &ce) || !ce.AgentOffline || ce.Code != agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE {
				t.Fatalf("err = %v, want AGENT_OFFLINE", err)
			}
			extra := 0 // DetailNeverSent marks a request that never left (no connection)
			if _, ok := ce.Detail[DetailNeverSent]; ok {
				extra = 1
			}
			if ce.Message != OfflineMessage || ce.Retryable || len(ce.Detail) != extra || ce.Reason != ReasonAgentOffline {
				t.Fatalf("wire-visible error changed: %+v", ce)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("errors.Is(%v, %v) = false; cause %v", err, tc.want, ce.Cause)
			}
			// Request (the RPC interface) is unchanged: a response, no error.
			resp, rerr := rpc.Request(context.Background(), SubjectFor("ws", "a1"), pingReq(), 0)
			if rerr != nil || resp.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE {
				t.Fatalf("Request = %v, %v", resp, rerr)
			}
		})
	}
}
