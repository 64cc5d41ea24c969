package control

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Stream ports and the relay's default path.
const (
	DesktopStreamPort  = 6080
	TerminalStreamPort = 7681
	RelayStreamPath    = "/stream"
)

// RelayConfig is where viewers reach a machine's streams.
type RelayConfig struct {
	Host string
	Port int    // 0: 443 with TLS, 80 without
	TLS  *bool  // nil: true
	Path string // "": RelayStreamPath
}

// DefaultRelayHost is the relay host assumed when none is configured.
const DefaultRelayHost = "relay.opengeni.local"

// ParseRelayURL reads a relay URL the way the reference registry reads
// OPENGENI_SELFHOSTED_RELAY_URL. "" is the default relay
// (relay.opengeni.local:443, TLS, /stream). A value without "://" is taken as
// wss://. TLS is wss or https; the port is explicit or 443/80; the path is
// the URL's, or /stream when it is empty or "/". An unparsable value becomes
// the host itself on 443 with TLS.
func ParseRelayURL(raw string) RelayConfig {
	yes := true
	fallback := RelayConfig{Host: raw, Port: 443, TLS: &yes, Path: RelayStreamPath}
	if raw == "" {
		fallback.Host = DefaultRelayHost
		return fallback
	}
	s := raw
	if !strings.Contains(s, "://") {
		s = "wss://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Hostname() == "" {
		return fallback
	}
	tls := u.Scheme == "wss" || u.Scheme == "https"
	port := 80
	if tls {
		port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil {
			return fallback
		}
		port = n
	}
	path := u.EscapedPath()
	if path == "" || path == "/" {
		path = RelayStreamPath
	}
	return RelayConfig{Host: u.Hostname(), Port: port, TLS: &tls, Path: path}
}

// ExposedPortEndpoint is where a viewer reaches a machine port through the
// relay. The viewer's ogs_ token is never part of it: it travels in-band in
// StreamOpen.
type ExposedPortEndpoint struct {
	Host     string
	Port     int
	TLS      bool
	Path     string
	Query    string // ws=..&agent=..&port=..&channel=..
	Protocol string // "pty", "vnc" or "raw"
}

// ResolveExposedPort makes the machine register a relay channel for port and
// returns the endpoint a viewer dials (control.md §1.5). Port 6080 is the
// desktop (desktop_ensure at the display's own size); any other port opens a
// login-shell terminal (pty_open, cwd = the raw working directory), which
// needs no display.
func (s *Session) ResolveExposedPort(ctx context.Context, port int) (*ExposedPortEndpoint, error) {
	var ch *agentpb.StreamChannel
	if port == DesktopStreamPort {
		r, err := invokeCase[*agentpb.ControlResponse_DesktopEnsure](ctx, s, "resolveExposedPort", func(r *agentpb.ControlRequest) {
			r.Op = &agentpb.ControlRequest_DesktopEnsure{DesktopEnsure: &agentpb.DesktopEnsureRequest{}}
		}, (*agentpb.ControlResponse).GetDesktopEnsure)
		if err != nil {
			return nil, err
		}
		ch = r.GetChannel()
	} else {
		r, err := s.ptyOpen(ctx, "resolveExposedPort", PtyOptions{})
		if err != nil {
			return nil, err
		}
		ch = r.GetChannel()
	}

	return s.streamEndpoint(port, ch), nil
}

// ErrStreamPortUnavailable means an endpoint has no usable host or port.
var ErrStreamPortUnavailable = errors.New("stream port unavailable")

// BuildStreamURL renders the viewer URL of an endpoint:
// ws[s]://host[:port]/path[?query]. The port is dropped when it is the
// scheme's default, a bare IPv6 host is bracketed, the path gets a leading
// "/" ("/" when empty). A missing host or an out-of-range port is
// ErrStreamPortUnavailable.
func BuildStreamURL(ep ExposedPortEndpoint) (string, error) {
	if ep.Host == "" {
		return "", fmt.Errorf("%w: no relay host", ErrStreamPortUnavailable)
	}
	if ep.Port <= 0 || ep.Port > 65535 {
		return "", fmt.Errorf("%w: invalid relay port %d", ErrStreamPortUnavailable, ep.Port)
	}
	scheme, def := "ws", 80
	if ep.TLS {
		scheme, def = "wss", 443
	}
	host := ep.Host
	if strings.Contains(host, ":") && !strings.HasPrefix(host, "[") {
		host = "[" + host + "]"
	}
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteString("://")
	b.WriteString(host)
	if ep.Port != def {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(ep.Port))
	}
	if !strings.HasPrefix(ep.Path, "/") {
		b.WriteString("/")
	}
	b.WriteString(ep.Path)
	if q := strings.TrimPrefix(ep.Query, "?"); q != "" {
		b.WriteString("?")
		b.WriteString(q)
	}
	return b.String(), nil
}

// encodeURIComponent escapes like JavaScript's encodeURIComponent: all but
// A-Z a-z 0-9 - _ . ! ~ * ' ( ) are percent-encoded UTF-8.
func encodeURIComponent(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
