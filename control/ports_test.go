package control

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// §8 checks 6-8.
func TestResolveExposedPort(t *testing.T) {
	mock := newMock("")
	f := newFixture(t, mock)
	s := f.session(t, func(c *SessionConfig) { c.WorkingDir = "/home/u/proj/" })
	ctx := ctxT(t)

	ep, err := s.ResolveExposedPort(ctx, 6080) // 6, 8
	if err != nil {
		t.Fatal(err)
	}
	if ep.Host != "relay.test" || ep.Port != 443 || !ep.TLS || ep.Path != "/stream" {
		t.Fatalf("endpoint = %+v", ep)
	}
	for _, want := range []string{"ws=" + testWS, "agent=agent-abc", "port=6080", "channel="} {
		if !strings.Contains(ep.Query, want) {
			t.Fatalf("query %q lacks %q", ep.Query, want)
		}
	}
	if ep.Query != "ws="+testWS+"&agent=agent-abc&port=6080&channel=mock-desktop" || ep.Protocol != "pty" /* the mock's kind-1 quirk */ {
		t.Fatalf("endpoint = %+v", ep)
	}
	if d := mock.last().GetDesktopEnsure(); d == nil || d.GetWidth() != 0 || d.GetHeight() != 0 {
		t.Fatalf("last op = %v", mock.last())
	}

	before := len(mock.requests())
	ep, err = s.ResolveExposedPort(ctx, 7681) // 7
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ep.Query, "port=7681") || !strings.Contains(ep.Query, "channel=mock-pty") || ep.Protocol != "pty" {
		t.Fatalf("endpoint = %+v", ep)
	}
	for _, r := range mock.requests()[before:] {
		if r.req.GetDesktopEnsure() != nil {
			t.Fatal("a terminal port sent desktop_ensure")
		}
	}
	p := mock.last().GetPtyOpen()
	if p == nil || len(p.GetCommand()) != 0 || p.GetCwd() != "/home/u/proj/" || p.GetCols() != 0 || p.GetRows() != 0 || p.GetTerm() != "xterm-256color" || len(p.GetEnv()) != 0 {
		t.Fatalf("pty_open = %v", p)
	}
	u, err := BuildStreamURL(*ep)
	if err != nil || u != "wss://relay.test/stream?ws="+testWS+"&agent=agent-abc&port=7681&channel=mock-pty" {
		t.Fatalf("BuildStreamURL = %q, %v", u, err)
	}

	// No channel in the reply: the fallback id, url-encoded; the kind decides
	// the protocol.
	mock.setIntercept(func(r *agentpb.ControlRequest) *agentpb.ControlResponse {
		if r.GetPtyOpen() != nil {
			return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_PtyOpen{PtyOpen: &agentpb.PtyOpenResponse{}}}
		}
		if r.GetDesktopEnsure() != nil {
			return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_DesktopEnsure{DesktopEnsure: &agentpb.DesktopEnsureResponse{
				Channel: &agentpb.StreamChannel{ChannelId: "d 1/x", Kind: agentpb.StreamKind_STREAM_KIND_DESKTOP}}}}
		}
		return nil
	})
	ep, err = s.ResolveExposedPort(ctx, 3000)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := url.ParseQuery(ep.Query)
	if q.Get("channel") != testWS+":agent-abc:3000" || !strings.Contains(ep.Query, "channel="+testWS+"%3Aagent-abc%3A3000") || ep.Protocol != "raw" {
		t.Fatalf("fallback endpoint = %+v", ep)
	}
	ep, err = s.ResolveExposedPort(ctx, 6080)
	if err != nil || ep.Protocol != "vnc" || !strings.HasSuffix(ep.Query, "channel=d%201%2Fx") {
		t.Fatalf("desktop endpoint = %+v, %v", ep, err)
	}

	// Relay defaults: TLS on, 443, /stream; no TLS → 80.
	no := false
	for _, tc := range []struct {
		relay RelayConfig
		port  int
		tls   bool
		path  string
	}{
		{RelayConfig{Host: "r"}, 443, true, "/stream"},
		{RelayConfig{Host: "r", TLS: &no}, 80, false, "/stream"},
		{RelayConfig{Host: "r", TLS: &no, Port: 8080, Path: "/x"}, 8080, false, "/x"},
	} {
		s := f.session(t, func(c *SessionConfig) { c.Relay = tc.relay })
		ep, err := s.ResolveExposedPort(ctx, 7681)
		if err != nil || ep.Port != tc.port || ep.TLS != tc.tls || ep.Path != tc.path {
			t.Fatalf("relay %+v → %+v, %v", tc.relay, ep, err)
		}
	}

	// Errors propagate as *Error.
	mock.setIntercept(func(*agentpb.ControlRequest) *agentpb.ControlResponse {
		return agentErr("", agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, "no display", false)
	})
	if _, err := s.ResolveExposedPort(ctx, 6080); err == nil {
		t.Fatal("want an error")
	} else {
		asError(t, err)
	}
}

func TestBuildStreamURL(t *testing.T) {
	tests := []struct {
		ep   ExposedPortEndpoint
		want string
		err  bool
	}{
		{ExposedPortEndpoint{Host: "relay.opengeni.ai", Port: 443, TLS: true, Path: "/stream", Query: "ws=w1&agent=a1&port=7681&channel=ch-1"},
			"wss://relay.opengeni.ai/stream?ws=w1&agent=a1&port=7681&channel=ch-1", false},
		{ExposedPortEndpoint{Host: "h", Port: 80, Path: "stream"}, "ws://h/stream", false},
		{ExposedPortEndpoint{Host: "h", Port: 443}, "ws://h:443/", false}, // TLS defaults to false here
		{ExposedPortEndpoint{Host: "h", Port: 80, TLS: true}, "wss://h:80/", false},
		{ExposedPortEndpoint{Host: "h", Port: 8443, TLS: true, Query: "?a=b"}, "wss://h:8443/?a=b", false},
		{ExposedPortEndpoint{Host: "::1", Port: 9000}, "ws://[::1]:9000/", false},
		{ExposedPortEndpoint{Host: "[::1]", Port: 80}, "ws://[::1]/", false},
		{ExposedPortEndpoint{Port: 443}, "", true},
		{ExposedPortEndpoint{Host: "h"}, "", true},
		{ExposedPortEndpoint{Host: "h", Port: 70000}, "", true},
	}
	for _, tc := range tests {
		got, err := BuildStreamURL(tc.ep)
		if tc.err {
			if !errors.Is(err, ErrStreamPortUnavailable) {
				t.Errorf("%+v: err = %v, want ErrStreamPortUnavailable", tc.ep, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.ep, got, err, tc.want)
		}
	}
}

func TestParseRelayURL(t *testing.T) {
	tests := []struct {
		raw  string
		host string
		port int
		tls  bool
		path string
	}{
		{"", "relay.opengeni.local", 443, true, "/stream"},
		{"wss://relay.example/stream", "relay.example", 443, true, "/stream"},
		{"relay.example", "relay.example", 443, true, "/stream"},
		{"ws://relay.example:8080/", "relay.example", 8080, false, "/stream"},
		{"http://relay.example/custom", "relay.example", 80, false, "/custom"},
		{"https://[::1]:9443/s", "::1", 9443, true, "/s"},
		{"wss://", "wss://", 443, true, "/stream"},
	}
	for _, tc := range tests {
		r := ParseRelayURL(tc.raw)
		if r.Host != tc.host || r.Port != tc.port || r.TLS == nil || *r.TLS != tc.tls || r.Path != tc.path {
			t.Errorf("ParseRelayURL(%q) = %+v (tls %v)", tc.raw, r, *r.TLS)
		}
	}
}

func TestEncodeURIComponent(t *testing.T) {
	for in, want := range map[string]string{
		"agent-abc":     "agent-abc",
		"a b/c?d&e=f":   "a%20b%2Fc%3Fd%26e%3Df",
		"!~*'()._-":     "!~*'()._-",
		"ws:agent:7681": "ws%3Aagent%3A7681",
		"é":             "%C3%A9",
	} {
		if got := encodeURIComponent(in); got != want {
			t.Errorf("encodeURIComponent(%q) = %q, want %q", in, got, want)
		}
	}
}
