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
	dataDir := fs.String("data-dir", "", "platform state directory; every file of this stack lives here (env "+devstack.EnvDevData+"; default <user cache dir>/opengeni-dev)")
	virtualDesktop := fs.Bool("virtual-desktop", false, "let desktop_ensure start an Xvfb when this machine has no display")
	allowScreen := fs.Bool("allow-screen-control", false, "consent to screen control (mouse, keyboard) for this machine, recorded in its agent config dir")
	trusted := fs.String("trusted-proxies", os.Getenv(envDevTrustedProxies), "comma-separated CIDRs of reverse proxies (a tunnel on loopback: 127.0.0.1) whose X-Forwarded-For names the client for the API's and relay's per-IP limits; default none (env "+envDevTrustedProxies+")")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env OPENGENI_LOG_LEVEL)")
	logFormat := fs.String("log-format", "", logging.FormatUsage)
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
	logger, err := logging.NewFormat(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "relay dev:", err)
		return 2
	}
	stack, err := devstack.Start(ctx, devstack.Options{NATSPort: *port, RelayPort: *relayPort, APIPort: *apiPort,
		DataDir: *dataDir, WorkspaceRoot: *root, VirtualDesktop: *virtualDesktop, AllowScreenControl: *allowScreen,
		TrustedProxies: proxies, Out: stdout, Logger: logger})
	if err != nil {
		fmt.Fprintln(stderr, "relay dev:", err)
		return 1
	}
	p := stack.Platform()
	// console: the web console on the enrollment API's origin (issue 17).
	stopConsole, err := stack.MountConsole(logger)
	if err != nil {
		fmt.Fprintln(stderr, "relay dev: console:", err)
		return 1
	}
	defer stopConsole()
	fmt.Fprintf(stdout, "  web console  %s/   (sign in with the admin token in %s)\n", p.APIURL(), p.AdminTokenFile())
	// relay ctl finds this stack by its data dir: say how when it is not
	// the default one.
	ctl := "bin/relay ctl"
	if def, err := devstack.PlatformDataDir(); err != nil || def != p.DataDir() {
		ctl += " --data-dir " + p.DataDir()
	}
	secretNote := "viewer secret in " + stack.SecretFile()
	if stack.SecretFile() == "" {
		secretNote = "viewer secret: export " + control.EnvStreamSecret + "=" + string(stack.StreamSecret())
	}
	desktopNote := "needs a display: relay dev --virtual-desktop on headless hosts"
	if *virtualDesktop {
		desktopNote = "starts the virtual display first when there is none"
	}
	fmt.Fprintf(stdout, `
  OpenGeni dev platform is running (Ctrl-C to stop)
    NATS     %s   (agents: enrollment bearer via auth callout; control user in %s)
    API      %s   (enrollment API; device-flow page at /device; admin token in %s)
    relay    %s   (%s)
    data     %s   (relay ctl --data-dir, env %s)
    machine  workspace=%s agent=%s (this computer)
             agent config dir %s
             screen control %s (%s)

  Try, in another terminal (go build -o bin/ ./cmd/... once; bin/relay keeps exit codes, go run does not):
    %s ping
    %s exec -- uname -a
    %s ls .
    %s put ./go.sum /tmp/go.sum && %s get /tmp/go.sum ./copy.sum
    %s shell          (an interactive terminal through the relay)
    %s screenshot out.png   (%s)
    %s approve CODE   (pair another agent: the code opengeni-agent enroll prints)

`, stack.NATSURL(), p.CtlFile(), p.APIURL(), p.AdminTokenFile(), stack.RelayURL(), secretNote,
		p.DataDir(), devstack.EnvDevData, stack.WorkspaceID(), stack.AgentID(), p.AgentConfigDir(),
		consentState(stack.ScreenControl()), consentHow(p.AgentConfigDir()),
		ctl, ctl, ctl, ctl, ctl, ctl, ctl, desktopNote, ctl)
	if err := stack.Wait(); err != nil {
		fmt.Fprintln(stderr, "relay dev:", err)
		return 1
	}
	return 0
}

func consentState(on bool) string {
	if on {
		return "allowed"
	}
	return "not allowed"
}

// consentHow says how the owner changes the dev machine's consent.
func consentHow(agentConfigDir string) string {
	return "--allow-screen-control, or OPENGENI_CONFIG_DIR=" + agentConfigDir + " opengeni-agent consent screen-control on|off"
}
