// Package relay is the stream relay: a stateless WebSocket edge that splices
// PTY and desktop bytes between a machine's agent (role AGENT) and its
// viewers (role CLIENT), as specified by relay.md §1–6 and §10.
//
// Routes: GET /stream (WebSocket), GET /healthz, GET /metrics. Every relay
// message is one binary WebSocket message, tag byte || protobuf (package
// relay/frame). A connection's first binary message must be a StreamOpen; the
// relay authorizes it (relay/token), attaches it to a channel, acks, replays
// the retained frames the peer produced since resume_from_seq, and then
// splices frames until either side goes away.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/opengeni/opengeni-agent/internal/iplimit"
)

// Server is one relay process. Create it with New, serve Handler() or call
// ListenAndServe, and Close it when done.
type Server struct {
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	reg     *registry
	cl      *cluster // nil for a single relay (no Options.NATS)
	// opens is the per-client-IP limit on /stream upgrades.
	opens    *iplimit.Limiter
	clientIP *iplimit.Resolver

	ctx    context.Context // cancelled by Close: every socket is dropped
	cancel context.CancelFunc
	wg     sync.WaitGroup // connections and the reaper
	once   sync.Once
}

// New builds a relay from opts (zero values that make no sense get defaults)
// and starts its half-open reaper. logger may be nil.
func New(opts Options, logger *slog.Logger) (*Server, error) {
	if opts.PingInterval < 0 || opts.PairTimeout < 0 {
		return nil, errors.New("relay: negative duration in options")
	}
	if opts.RingFrames < 0 || opts.QueueLen < 0 {
		return nil, errors.New("relay: negative size in options")
	}
	opts = opts.withDefaults()
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s := &Server{opts: opts, log: logger.With("component", "relay"), metrics: new(Metrics)}
	s.reg = newRegistry(&s.opts, s.metrics)
	if opts.Revocations != nil {
		s.reg.admit = s.admitMachine
		opts.Revocations.OnRevoke(func(ws, agent string) { s.RevokeAgent(ws, agent) })
	}
	s.opens = iplimit.New(iplimit.Bucket{Capacity: opts.OpenRateBurst, Refill: float64(opts.OpenRatePerSec)}, opts.Now)
	s.clientIP = iplimit.NewResolver(opts.TrustedProxies)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if opts.NATS != nil {
		cl, err := newCluster(s, opts.NATS)
		if err != nil {
			s.cancel()
			return nil, fmt.Errorf("relay: join replicas over NATS: %w", err)
		}
		s.cl = cl
		s.reg.onRemove = cl.dropHome
		s.wg.Add(2)
		go cl.loop()
		go cl.dispatch()
	}
	if opts.StreamTokenSecret == "" {
		s.log.Warn("stream token secret is empty: every viewer will be rejected at handshake")
	}
	s.wg.Add(1)
	go s.reaper()
	return s, nil
}

// Metrics returns the live process metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Handler returns the relay's HTTP handler (GET /stream, /healthz, /metrics;
// other methods 405, other paths 404).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	var h func(http.ResponseWriter, *http.Request)
	switch r.URL.Path {
	case "/stream":
		h = s.serveStream
	case "/healthz":
		h = serveHealthz
	case "/metrics":
		h = s.serveMetrics
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET,HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h(w, r)
}

func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ok")
}

func (s *Server) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.metrics.WriteText(w)
}

// ListenAndServe listens on opts.Bind and serves until ctx ends, then shuts
// down gracefully: stop accepting, drop every relay socket, wait. A bind
// failure is returned at once.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.opts.Bind)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", s.opts.Bind, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is ListenAndServe on an existing listener.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("relay listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		s.Close()
		return err
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(shCtx) // hijacked WebSockets are not tracked by net/http
	s.Close()
	<-errc
	if err != nil {
		return fmt.Errorf("relay: shutdown: %w", err)
	}
	return nil
}

// Close drops every connection, stops the reaper and waits for them. Sockets
// are dropped without a StreamClose so clients reconnect (to a new relay).
func (s *Server) Close() {
	s.once.Do(func() {
		s.reg.shutdown()
		s.cancel()
		if s.cl != nil {
			s.wg.Wait() // proxied sides have said goodbye
			s.cl.shutdown()
		}
	})
	s.wg.Wait()
}

func (s *Server) reaper() {
	defer s.wg.Done()
	t := s.opts.Clock.NewTicker(s.opts.ReapInterval, "relay", "reap")
	defer t.Stop()
	for {
		if n := s.reg.reap(s.opts.Now()); n > 0 {
			s.log.Info("reaped half-open channels", "count", n)
		}
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// acceptOptions: no subprotocol, no Origin check, no compression (relay.md §1.2).
var acceptOptions = &websocket.AcceptOptions{InsecureSkipVerify: true}
