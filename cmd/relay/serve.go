package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/opengeni/opengeni-agent/internal/logging"
	"github.com/opengeni/opengeni-agent/relay"
	"github.com/opengeni/opengeni-agent/relay/revocation"
)

// cmdServe runs the stream relay (relay.md §1.1): defaults, then env vars,
// then flags; SIGINT/SIGTERM shut it down gracefully (exit 0); a bind
// failure exits 1.
func cmdServe(args []string, stdout, stderr io.Writer) int {
	opts := relay.DefaultOptions()
	if err := applyServeEnv(&opts, os.Getenv); err != nil {
		fmt.Fprintln(stderr, "relay serve:", err)
		return 2
	}
	var rev revocation.Config
	applyRevocationEnv(&rev, os.Getenv)
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: relay serve [flags]

The stream relay: splices PTY and desktop bytes between agents and viewers.
Every flag also reads its env var; a flag wins.

Revocation: with -nats-url the relay watches the platform's enrollments
bucket; a revoked machine's ogr_ token is refused and its live channels are
closed. Until the watch has synced, and while NATS is unreachable, agent
opens are refused (retryable); viewers and open channels are unaffected.
The NATS user needs only the permissions listed in relay/revocation.

Replicas: with -replicas (and -nats-url) any number of relays behind a
plain load balancer route channels between themselves through NATS; the
NATS user also needs the subjects listed in relay/replica.go.

Client IP: the per-IP open limit keys on the socket address; only a peer in
-trusted-proxies may name the client in X-Forwarded-For.

Flags:
`)
		fs.PrintDefaults()
	}
	registerServeFlags(&opts, fs)
	registerRevocationFlags(fs, &rev)
	replicas := registerReplicasFlag(fs, os.Getenv)
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env OPENGENI_LOG_LEVEL)")
	logFormat := fs.String("log-format", "", logging.FormatUsage)
	metricsListen := fs.String("metrics-listen", os.Getenv(envMetricsListen), "also serve GET /metrics and /healthz on this address, e.g. 127.0.0.1:9090 (env "+envMetricsListen+")")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "relay serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	logger, err := logging.NewFormat(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "relay serve:", err)
		return 2
	}
	if *replicas && !rev.Enabled() {
		fmt.Fprintln(stderr, "relay serve: -replicas needs the NATS of -nats-url")
		return 2
	}
	if rev.Enabled() {
		w, nc, err := rev.ConnectConn(logger)
		if err != nil {
			fmt.Fprintln(stderr, "relay serve:", err)
			return 2
		}
		defer nc.Close()
		defer w.Close()
		opts.Revocations = w
		if *replicas {
			opts.NATS = nc
		}
	} else {
		logger.Warn("revocation checking is off (no -nats-url): ogr_ tokens stay valid until they expire")
	}
	srv, err := relay.New(opts, logger)
	if err != nil {
		fmt.Fprintln(stderr, "relay serve:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *metricsListen != "" {
		if err := serveMetricsOn(ctx, *metricsListen, srv.Handler(), logger); err != nil {
			logger.Error("relay stopped", "err", err)
			return 1
		}
	}
	if err := srv.ListenAndServe(ctx); err != nil {
		logger.Error("relay stopped", "err", err)
		return 1
	}
	logger.Info("relay stopped")
	return 0
}
