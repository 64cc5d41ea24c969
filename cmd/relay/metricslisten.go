package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// envMetricsListen is the env var of `relay serve --metrics-listen`.
const envMetricsListen = "OPENGENI_RELAY_METRICS_LISTEN"

// serveMetricsOn serves the relay's GET /metrics and /healthz (and nothing
// else) on addr until ctx ends, so a scraper can use an address of its own
// (e.g. loopback or a private interface). A bind failure is returned at once.
func serveMetricsOn(ctx context.Context, addr string, relay http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	hs := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" && r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		relay.ServeHTTP(w, r)
	})}
	log.Info("relay metrics listening", "addr", ln.Addr().String())
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	return nil
}
