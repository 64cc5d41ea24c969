// Command opengeni-agent turns this computer into a machine an OpenGeni
// platform can work on: it connects to the platform's NATS and serves exec,
// files, git, terminals and (with consent) the desktop.
//
// Flags live here only; behaviour lives in the agent packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/internal/logging"
)

const usage = `opengeni-agent: connects this machine to an OpenGeni platform.

Usage:
  opengeni-agent run [flags]     serve this machine until SIGINT/SIGTERM
  opengeni-agent version

Run "opengeni-agent run -h" for the run flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 0
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
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
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *token == "" {
		*token = os.Getenv("OPENGENI_NATS_TOKEN")
	}
	if *natsURL == "" || *ws == "" || *agentID == "" {
		fmt.Fprintln(stderr, "opengeni-agent run: --nats-url, --workspace-id and --agent-id are required (or their env vars)")
		return 2
	}
	logger := logging.New(stderr, *logLevel)
	a, err := agent.New(agent.Options{
		Servers:       strings.Split(*natsURL, ","),
		Token:         *token,
		CredsFile:     *creds,
		WorkspaceID:   *ws,
		AgentID:       *agentID,
		WorkspaceRoot: *root,
		MachineName:   *machine,
		UpdateChannel: *channel,
		Logger:        logger,
	})
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger.Info("agent online; press Ctrl-C to stop", "workspace_id", *ws, "agent_id", *agentID)
	if err := a.Run(ctx); err != nil {
		logger.Error("agent exited with an error", "err", err)
		return 1
	}
	return 0
}
