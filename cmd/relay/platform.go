package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/opengeni/opengeni-agent/internal/iplimit"
	"github.com/opengeni/opengeni-agent/internal/logging"
	"github.com/opengeni/opengeni-agent/internal/natsurl"
	"github.com/opengeni/opengeni-agent/platform"
)

const platformUsage = `Usage:
  relay platform [flags]      run the platform side against an external NATS (cluster)
  relay platform secrets      print a fresh set of secrets as an env file
  relay platform nats-config  print the accounts/auth-callout block every nats-server includes

The platform side: the enrollment API, the auth-callout responder, the
ingestion of agents' hellos and heartbeats into JetStream KV, and optionally
a stream relay. Run one or more of them against every node of a NATS
cluster configured as deploy/nats-cluster (accounts.conf is nats-config's
output). Secrets are read from the environment only (flags show in ps): the
names that "relay platform secrets" prints.

Flags (each also reads its env var; a flag wins):
`

// cmdPlatform is `relay platform`.
func cmdPlatform(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runPlatform(ctx, args, stdout, stderr)
}

// runPlatform parses flags into platform options and runs until ctx ends.
func runPlatform(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "secrets":
			var s platform.Secrets
			if _, err := s.Fill(); err != nil {
				fmt.Fprintln(stderr, "relay platform secrets:", err)
				return 1
			}
			env, err := s.Env()
			if err != nil {
				fmt.Fprintln(stderr, "relay platform secrets:", err)
				return 1
			}
			fmt.Fprint(stdout, env)
			return 0
		case "nats-config":
			fmt.Fprint(stdout, platform.AccountsConfig())
			return 0
		}
	}
	fs := flag.NewFlagSet("platform", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, platformUsage)
		fs.PrintDefaults()
	}
	natsURL := fs.String("nats-url", os.Getenv("OPENGENI_NATS_URL"), "the NATS servers, comma separated: every node of the cluster (env OPENGENI_NATS_URL)")
	agentNATS := fs.String("agent-nats-url", os.Getenv("OPENGENI_AGENT_NATS_URL"), "NATS URLs handed to agents, comma separated; default -nats-url (env OPENGENI_AGENT_NATS_URL)")
	defReplicas := 3
	if v := os.Getenv("OPENGENI_KV_REPLICAS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(stderr, "relay platform: OPENGENI_KV_REPLICAS=%q is not a number\n", v)
			return 2
		}
		defReplicas = n
	}
	replicas := fs.Int("replicas", defReplicas, "replicas of the KV buckets: 3 on a 3-node cluster, 1 on a single server (env OPENGENI_KV_REPLICAS)")
	apiListen := fs.String("api-listen", envOr("OPENGENI_API_LISTEN", "0.0.0.0:"+strconv.Itoa(platform.DefaultAPIPort)), "enrollment API listen address (env OPENGENI_API_LISTEN)")
	publicURL := fs.String("public-url", os.Getenv("OPENGENI_PUBLIC_URL"), "origin of the device-flow verification URI, e.g. https://app.example; default the request's own (env OPENGENI_PUBLIC_URL)")
	relayListen := fs.String("relay-listen", os.Getenv("OPENGENI_RELAY_LISTEN"), "also run a stream relay on this address; empty runs none (env OPENGENI_RELAY_LISTEN)")
	relayURL := fs.String("relay-url", os.Getenv("OPENGENI_RELAY_URL"), "the relay's public dial base handed to agents (wss://relay.example/stream); with -relay-listen default ws://<listen>/stream (env OPENGENI_RELAY_URL)")
	trusted := fs.String("trusted-proxies", os.Getenv("OPENGENI_TRUSTED_PROXIES"), "comma-separated CIDRs of reverse proxies whose X-Forwarded-For names the client (env OPENGENI_TRUSTED_PROXIES)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env OPENGENI_LOG_LEVEL)")
	logFormat := fs.String("log-format", "", logging.FormatUsage)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "relay platform: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	urls := natsurl.Split(*natsURL)
	if len(urls) == 0 {
		return usageErr("-nats-url is required (every node of the cluster, comma separated)")
	}
	if *replicas < 1 {
		return usageErr("-replicas must be at least 1")
	}
	proxies, err := iplimit.ParsePrefixes(*trusted)
	if err != nil {
		return usageErr("-trusted-proxies: %v", err)
	}
	secrets := platform.SecretsFromEnv(os.Getenv)
	if err := secrets.Validate(); err != nil {
		return usageErr("%v", err)
	}
	logger, err := logging.NewFormat(stderr, *logLevel, *logFormat)
	if err != nil {
		return usageErr("%v", err)
	}
	relayHandedOut := *relayURL
	if *relayListen != "" {
		relayHandedOut = "" // set by StartRelay
	}
	p, err := platform.Start(ctx, platform.Options{Secrets: secrets, NATSURLs: urls, AgentNATSURLs: natsurl.Split(*agentNATS),
		Replicas: *replicas, APIAddr: *apiListen, PublicURL: *publicURL, RelayURL: relayHandedOut, TrustedProxies: proxies,
		Logger: logger})
	if err != nil {
		fmt.Fprintln(stderr, "relay platform:", err)
		return 1
	}
	defer p.Close()
	if *relayListen != "" {
		r, err := p.StartRelay(ctx, platform.RelayOptions{Addr: *relayListen, PublicURL: *relayURL, TrustedProxies: proxies})
		if err != nil {
			fmt.Fprintln(stderr, "relay platform:", err)
			return 1
		}
		fmt.Fprintf(stdout, "relay platform: relay on %s (agents dial %s)\n", r.Addr(), r.URL())
	}
	fmt.Fprintf(stdout, "relay platform: enrollment API on %s; NATS %s (KV replicas %d)\n", p.APIURL(), p.NATSURL(), *replicas)
	<-p.Done()
	logger.Info("platform stopped")
	return 0
}
