// Command relay is the platform-side binary:
//
//	relay serve  the stream relay (WebSocket edge between agents and viewers)
//	relay dev    the whole system on this machine (embedded NATS, a relay, this machine's agent)
//	relay ctl    drive a machine from a shell through the control library
//	relay platform  the platform side (enrollment API, auth callout, ingestion, relay) on an external NATS cluster
//
// Flags live here only; behaviour lives in the relay, control, platform and devstack packages.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/opengeni/opengeni-agent/agent"
)

const usage = `relay: the OpenGeni platform side.

Usage:
  relay serve [flags]               run the stream relay (env OPENGENI_RELAY_*)
  relay dev [flags]                 run NATS, a relay and this machine's agent on loopback
  relay ctl [flags] <command> ...   drive a machine (ping, exec, ls, cat, put, get, ...)
  relay platform [flags]            run the platform side against an external NATS cluster (production)

Run "relay <command> -h" for flags; "relay --version" prints the version.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "dev":
		return cmdDev(args[1:], stdout, stderr)
	case "ctl":
		return cmdCtl(args[1:], stdout, stderr)
	case "platform":
		return cmdPlatform(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "relay %s\n", agent.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "relay: unknown command %q\n\n%s", args[0], usage)
	return 2
}
