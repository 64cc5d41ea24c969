package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/opengeni/opengeni-agent/agent/config"
)

// defaultAPIURL is the control plane enrollment talks to unless --api-url
// or $OPENGENI_API_URL says otherwise (agent.md §1).
const defaultAPIURL = "https://api.opengeni.ai"

// globalAPIURL is the global --api-url, taken from anywhere on the command
// line by takeGlobalFlags.
var globalAPIURL string

const notEnrolledMessage = "This machine is not enrolled yet. Run `opengeni-agent enroll` (see the Machines page for the one-liner), then `opengeni-agent run`."

// takeGlobalFlags removes the global --api-url (accepted before or after the
// subcommand, as --api-url X or --api-url=X) and records it.
func takeGlobalFlags(args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			out = append(out, args[i:]...)
			break
		}
		if !strings.HasPrefix(a, "-") {
			out = append(out, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "api-url" {
			out = append(out, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, errors.New("flag needs an argument: --api-url")
			}
			i++
			val = args[i]
		}
		globalAPIURL = val
	}
	return out, nil
}

// apiURL is --api-url, else $OPENGENI_API_URL, else the default.
func apiURL() string {
	if globalAPIURL != "" {
		return globalAPIURL
	}
	if v := os.Getenv("OPENGENI_API_URL"); v != "" {
		return v
	}
	return defaultAPIURL
}

// parseInterspersed parses flags that may come after positional arguments
// ("disconnect abc --api-url x") and returns the positionals.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagExit maps a flag parse error to an exit code (help is success).
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// openStore opens the config dir, migrating a v1 credentials.json into a
// connection on the way (a malformed one is left alone and reported).
func openStore(stderr io.Writer) (*config.Store, error) {
	s, err := config.OpenDefault()
	if err != nil {
		return nil, err
	}
	api, err := config.NormalizeAPIURL(apiURL())
	if err != nil {
		return s, nil // reported by the command that needs the API
	}
	if id, err := s.MigrateLegacy(api); err != nil {
		fmt.Fprintf(stderr, "opengeni-agent: warning: could not migrate %s: %v\n", s.LegacyPath(), err)
	} else if id != "" {
		fmt.Fprintf(stderr, "opengeni-agent: migrated %s to connection %s\n", s.LegacyPath(), id)
	}
	return s, nil
}

// bareInvocation: enrolled → run with defaults; otherwise help and the
// not-enrolled line on stderr, exit 0 (a GUI launch must never hang).
func bareInvocation(stdout, stderr io.Writer) int {
	if s, err := openStore(stderr); err == nil && s.Enrolled() {
		return cmdRun(nil, stderr)
	}
	fmt.Fprint(stderr, usage)
	fmt.Fprintln(stderr, notEnrolledMessage)
	return 0
}
