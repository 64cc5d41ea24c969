// Command opengeni-agent turns this computer into a machine an OpenGeni
// platform can work on: it connects to the platform's NATS and serves exec,
// files, git, terminals and (with consent) the desktop.
//
// Flags live here only; behaviour lives in the agent packages.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/audit"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/pty"
	"github.com/opengeni/opengeni-agent/agent/service"
	"github.com/opengeni/opengeni-agent/internal/logging"
	"github.com/opengeni/opengeni-agent/internal/natsurl"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const usage = `opengeni-agent: connects this machine to an OpenGeni platform.

Usage:
  opengeni-agent run [flags]     serve this machine until SIGINT/SIGTERM
                                 (without --nats-url: every stored connection)
  opengeni-agent connect [flags] pair with a workspace (alias: enroll; --token for zero-click)
  opengeni-agent connections     list the stored connections
  opengeni-agent disconnect <id> remove a connection (id, id prefix or workspace id)
  opengeni-agent consent screen-control on|off [--connection <id>]
  opengeni-agent audit [--json] [--follow] [--since 1h] [--connection <id>] [--op exec]
                                 what the platform did on this machine
  opengeni-agent pause [--for 30m] | resume
                                 stop the platform at once (read live), and let it back
  opengeni-agent start [--restart] | stop | status [--system]
                                 the background service
  opengeni-agent service install|uninstall|start|stop|status [--system] [--print] [--restart]
  opengeni-agent update [--check] [--base-url URL] [--channel C]
  opengeni-agent uninstall [--purge]
  opengeni-agent version

Run "opengeni-agent run -h" for the run flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	args, err := takeGlobalFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "opengeni-agent: %v\n\n%s", err, usage)
		return 2
	}
	if len(args) == 0 {
		return bareInvocation(stdout, stderr)
	}
	switch args[0] {
	case "enroll", "connect":
		return cmdEnroll(args[0], args[1:], stdout, stderr)
	case "connections":
		return cmdConnections(args[1:], stdout, stderr)
	case "disconnect":
		return cmdDisconnect(args[1:], stdout, stderr)
	case "consent":
		return cmdConsent(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "audit":
		return cmdAudit(args[1:], stdout, stderr)
	case "pause":
		return cmdPause(args[1:], stdout, stderr)
	case "resume":
		return cmdResume(args[1:], stdout, stderr)
	case "run":
		return cmdRun(args[1:], stderr)
	case "service":
		return cmdService(args[1:], stdout, stderr)
	case "start", "stop":
		return lifecycle(args[0], args[1:], stdout, stderr, args[0])
	case "update":
		return cmdUpdate(args[1:], stdout, stderr)
	case "uninstall":
		return cmdUninstall(args[1:], stdout, stderr)
	case "health": // hidden: the self-update health gate
		return cmdHealth(stdout)
	case "service-reconcile": // hidden: a fleet update's new binary rewrites the service definition
		return cmdServiceReconcile(stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "opengeni-agent %s\n", agent.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "opengeni-agent: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats-url", os.Getenv("OPENGENI_NATS_URL"), "NATS server URL(s), comma separated (env OPENGENI_NATS_URL)")
	token := fs.String("nats-token", "", "NATS auth token (env OPENGENI_NATS_TOKEN; prefer the env var, flags show in ps)")
	creds := fs.String("nats-creds", os.Getenv("OPENGENI_NATS_CREDS"), "NATS .creds file (env OPENGENI_NATS_CREDS)")
	ws := fs.String("workspace-id", os.Getenv("OPENGENI_WORKSPACE_ID"), "workspace id (env OPENGENI_WORKSPACE_ID)")
	agentID := fs.String("agent-id", os.Getenv("OPENGENI_AGENT_ID"), "agent (enrollment) id (env OPENGENI_AGENT_ID)")
	root := fs.String("workspace-root", os.Getenv("OPENGENI_WORKSPACE_ROOT"), "where relative paths point (env OPENGENI_WORKSPACE_ROOT; default: current directory)")
	machine := fs.String("machine-name", "", "machine name reported to the platform (default: hostname)")
	channel := fs.String("channel", "stable", "update channel")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (env OPENGENI_LOG_LEVEL)")
	logFormat := fs.String("log-format", "", logging.FormatUsage)
	relayURL := fs.String("relay-url", os.Getenv("OPENGENI_RELAY_URL"), "stream relay for terminals and the desktop (env OPENGENI_RELAY_URL; stored connections carry their own)")
	virtualDesktop := fs.Bool("virtual-desktop", false, "let desktop_ensure start an Xvfb when this machine has no display")
	display := fs.String("display", "", "X11 display for desktop ops (default $DISPLAY)")
	logFile := fs.String("log-file", "", "append logs to this file instead of stderr (the Windows service and task use it)")
	var limits agentLimits
	fs.IntVar(&limits.MaxQueuedOps, "max-queued-ops", 0, "heavy ops that may wait for a free slot before new ones are refused as busy (default 4 per slot, 128)")
	fs.DurationVar(&limits.PtyIdleTimeout, "pty-idle-timeout", pty.DefaultIdleTimeout, "close a terminal nobody typed into for this long (negative: never)")
	fs.IntVar(&limits.MaxPtys, "max-ptys", pty.DefaultMaxLive, "terminals that may run at once")
	var auditOpts auditFlags
	auditOpts.register(fs)
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *token == "" {
		*token = os.Getenv("OPENGENI_NATS_TOKEN")
	}
	stored := *natsURL == "" && *agentID == "" // serve every stored connection
	if !stored && (*natsURL == "" || *ws == "" || *agentID == "") {
		fmt.Fprintln(stderr, "opengeni-agent run: --nats-url, --workspace-id and --agent-id go together (or their env vars); omit --nats-url and --agent-id to serve the stored connections")
		return 2
	}
	if *logFile != "" {
		f, err := openLogFile(*logFile)
		if err != nil {
			fmt.Fprintln(stderr, "opengeni-agent:", err)
			return 1
		}
		defer f.Close()
		stderr = f
	}
	logger, err := logging.NewFormat(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent run:", err)
		return 2
	}
	if stored {
		return runStoredCLI(storedRunOptions{WorkspaceID: *ws, MachineName: *machine, Channel: *channel, WorkspaceRoot: *root,
			VirtualDesktop: *virtualDesktop, Display: *display, Limits: limits, AuditFlags: auditOpts}, stderr, logger)
	}
	ctx, stop := stopContext()
	defer stop()
	ctx, restart := newUpdateRestart(ctx, logger)
	if code, done := restart.rolledBackAtStart(logger); done {
		return code
	}
	opts := agent.Options{
		SelfUpdate:     restart.su,
		Servers:        strings.Split(*natsURL, ","),
		Token:          *token,
		CredsFile:      *creds,
		WorkspaceID:    *ws,
		AgentID:        *agentID,
		WorkspaceRoot:  *root,
		MachineName:    *machine,
		UpdateChannel:  *channel,
		RelayURL:       *relayURL,
		RelayToken:     os.Getenv("OPENGENI_RELAY_TOKEN"), // env only: flags show in ps
		VirtualDesktop: *virtualDesktop,
		Display:        *display,
		Logger:         logger,
		MaxQueuedOps:   limits.MaxQueuedOps,
		PtyIdleTimeout: limits.PtyIdleTimeout,
		MaxPtys:        limits.MaxPtys,
	}
	// The owner's switch and audit log live in the config dir, explicit
	// connections included.
	if dir, err := config.Dir(); err == nil {
		store := config.NewStore(dir)
		opts.Pause = pauseSwitch(store)
		if !auditOpts.Off {
			log, err := openAudit(dir, auditOpts, logger)
			if err != nil {
				fmt.Fprintln(stderr, "opengeni-agent:", err)
				return 1
			}
			defer closeAudit(log)
			opts.Observer = log.For(audit.Connection{Workspace: *ws, Agent: *agentID, Platform: strings.Split(natsurl.Redact(*natsURL), ",")[0]})
		}
	}
	a, err := agent.New(opts)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	logger.Info("agent online; press Ctrl-C to stop", "workspace_id", *ws, "agent_id", *agentID)
	err = service.RunManaged(ctx,
		agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "service stopped"},
		agent.StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_HOST_SHUTDOWN, Message: "host shutting down"},
		restart.body(a.Run))
	return restart.finish(0, err, logger)
}

// agentLimits are the run flags bounding what one agent holds at once.
type agentLimits struct {
	MaxQueuedOps   int
	PtyIdleTimeout time.Duration
	MaxPtys        int
}
