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

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/devstack"
	"github.com/opengeni/opengeni-agent/internal/iplimit"
	"github.com/opengeni/opengeni-agent/internal/logging"
)

// envDevTrustedProxies is -trusted-proxies' env var.
const envDevTrustedProxies = "OPENGENI_DEV_TRUSTED_PROXIES"

func cmdDev(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("nats-port", devstack.DefaultNATSPort, "NATS port on 127.0.0.1 (-1: any free port)")
	relayPort := fs.Int("relay-port", devstack.DefaultRelayPort, "stream relay port on 127.0.0.1 (-1: any free port)")
	root := fs.String("workspace-root", "", "workspace root of the local machine (default: current directory)")
	apiPort := fs.Int("api-port", devstack.DefaultAPIPort, "enrollment API port on 127.0.0.1 (-1: any free port)")
	dataDir := fs.String("data-dir", "", "platform state directory (env "+devstack.EnvDevData+"; default <user cache dir>/opengeni-dev)")
	virtualDesktop := fs.Bool("virtual-desktop", false, "let desktop_ensure start an Xvfb when this machine has no display")
	trusted := fs.String("trusted-proxies", os.Getenv(envDevTrustedProxies), "comma-separated CIDRs of reverse proxies (a tunnel on loopback: 127.0.0.1) whose X-Forwarded-For names the client for the API's and relay's per-IP limits; default none (env "+envDevTrustedProxies+")")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env OPENGENI_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	proxies, err := iplimit.ParsePrefixes(*trusted)
	if err != nil {
		fmt.Fprintln(stderr, "relay dev: -trusted-proxies:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := logging.New(stderr, *logLevel)
	stack, err := devstack.Start(ctx, devstack.Options{NATSPort: *port, RelayPort: *relayPort, APIPort: *apiPort,
		DataDir: *dataDir, WorkspaceRoot: *root, VirtualDesktop: *virtualDesktop, TrustedProxies: proxies, Out: stdout, Logger: logger})
	if err != nil {
		fmt.Fprintln(stderr, "relay dev:", err)
		return 1
	}
	secretNote := "viewer secret in " + stack.SecretFile() + " (read by `relay ctl shell`)"
	if *dataDir != "" {
		secretNote += "\n             relay ctl reads this data dir with: export " + devstack.EnvDevData + "=" + stack.Platform().DataDir()
	}
	if stack.SecretFile() == "" {
		secretNote = "viewer secret: export " + control.EnvStreamSecret + "=" + string(stack.StreamSecret())
	}
	fmt.Fprintf(stdout, `
  OpenGeni dev platform is running (Ctrl-C to stop)
    NATS     %s   (agents: enrollment bearer via auth callout; control user in %s)
    API      %s   (enrollment API; admin token above)
    data     %s
    relay    %s
             %s
    machine  workspace=%s agent=%s (this computer)

  Try, in another terminal:
    go run ./cmd/relay ctl ping
    go run ./cmd/relay ctl exec -- uname -a
    go run ./cmd/relay ctl ls .
    go run ./cmd/relay ctl put ./some-file /tmp/copy && go run ./cmd/relay ctl get /tmp/copy ./back
    go run ./cmd/relay ctl shell          (an interactive terminal through the relay)

`, stack.NATSURL(), stack.Platform().CtlFile(), stack.Platform().APIURL(), stack.Platform().DataDir(), stack.RelayURL(), secretNote, stack.WorkspaceID(), stack.AgentID())
	if err := stack.Wait(); err != nil {
		fmt.Fprintln(stderr, "relay dev:", err)
		return 1
	}
	return 0
}
