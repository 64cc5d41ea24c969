package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/internal/logging"
)

// enrollParams are the inputs of one enrollment (agent.md §2.1).
type enrollParams struct {
	APIURL         string
	WorkspaceID    string
	MachineName    string
	Force          bool
	Token          string // a secret: never logged or printed
	NonInteractive bool
	Channel        string
}

// probeDisplay says whether this machine can offer a desktop (the
// canOfferDisplay hint; Hello reports the real capability later).
var probeDisplay = func() bool {
	switch runtime.GOOS {
	case "darwin", "windows":
		return true
	case "linux", "freebsd", "openbsd", "netbsd":
		return os.Getenv("DISPLAY") != "" || os.Getenv("WAYLAND_DISPLAY") != ""
	}
	return false
}

// newEnrollClient builds the enrollment HTTP client (a seam for tests).
var newEnrollClient = func(api string, prompt io.Writer, logger *slog.Logger) *enroll.Client {
	return &enroll.Client{BaseURL: api, UserAgent: "opengeni-agent/" + agent.Version, Prompt: prompt, Logger: logger}
}

func parseEnrollFlags(name string, args []string, stderr io.Writer) (enrollParams, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: opengeni-agent %s [flags]\n\nConnect this machine to a workspace: prints a code to approve on the Machines page\n(device flow), or with --token pairs at once (zero-click).\n\nFlags:\n", name)
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "  -api-url string\n    \tcontrol-plane API URL (global; env OPENGENI_API_URL; default "+defaultAPIURL+")")
	}
	p := enrollParams{}
	fs.StringVar(&p.Channel, "channel", "stable", "update channel")
	fs.StringVar(&p.WorkspaceID, "workspace-id", os.Getenv("OPENGENI_WORKSPACE_ID"), "workspace to join (env OPENGENI_WORKSPACE_ID)")
	fs.StringVar(&p.MachineName, "machine-name", "", "name shown on the Machines page (default: hostname)")
	fs.BoolVar(&p.Force, "force", false, "enroll again even if this workspace is already connected")
	// No env default here: flag defaults are printed by -h, and the token is a secret.
	fs.StringVar(&p.Token, "token", "", "zero-click enroll token (env OPENGENI_ENROLL_TOKEN; prefer the env var)")
	fs.BoolVar(&p.NonInteractive, "non-interactive", false, "fail instead of starting a device flow (requires a token)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return p, err
	}
	if p.Token == "" {
		p.Token = envEnrollToken()
	}
	p.APIURL = apiURL()
	return p, nil
}

func envEnrollToken() string { return os.Getenv("OPENGENI_ENROLL_TOKEN") }

// cmdEnroll is `enroll` (alias `connect`). It does not take an instance
// lock: a running agent picks the new connection up within seconds.
func cmdEnroll(name string, args []string, stdout, stderr io.Writer) int {
	p, err := parseEnrollFlags(name, args, stderr)
	if err != nil {
		return flagExit(err)
	}
	logger := logging.New(stderr, "")
	store, err := openStore(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "opengeni-agent:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := enrollConnection(ctx, store, p, stdout, logger); err != nil {
		logger.Error("agent exited with an error", "err", err)
		return 1
	}
	return 0
}

// enrollConnection runs the decision logic of agent.md §2.1 for one
// connection (identity = API origin + workspace) and persists the result.
func enrollConnection(ctx context.Context, store *config.Store, p enrollParams, stdout io.Writer, logger *slog.Logger) (*config.Credentials, error) {
	api, err := config.NormalizeAPIURL(p.APIURL)
	if err != nil {
		return nil, err
	}
	if !p.Force {
		if c, err := existingConnection(store, api, p); err != nil || c != nil {
			if c != nil {
				logger.Info("already enrolled; reusing credentials (pass --force to re-enroll)", "connection", c.ID(), "workspace_id", c.WorkspaceID)
			}
			return c, err
		}
	}
	useToken := p.NonInteractive || p.Token != ""
	if useToken && p.Token == "" {
		return nil, errors.New("--non-interactive requires --token (or $OPENGENI_ENROLL_TOKEN)")
	}
	if !useToken && p.WorkspaceID == "" {
		return nil, errors.New("enrollment requires a workspace id: pass --workspace-id <UUID> (or set $OPENGENI_WORKSPACE_ID). The user who approves this machine must hold a grant in that workspace.")
	}
	id, err := store.Identity()
	if err != nil {
		return nil, err
	}
	machine := p.MachineName
	if machine == "" {
		machine, _ = os.Hostname()
		if machine == "" {
			machine = "unknown"
		}
	}
	display := probeDisplay()
	client := newEnrollClient(api, stdout, logger)

	var wire *enroll.Credentials
	if useToken {
		wire, err = client.Exchange(ctx, enroll.ExchangeRequest{
			Token: p.Token, PublicKey: id.PublicKey(), OS: enroll.HostOS(), Arch: enroll.HostArch(),
			MachineName: machine, CanOfferDisplay: display,
		})
	} else {
		wire, err = client.DeviceFlow(ctx, enroll.StartRequest{
			WorkspaceID: p.WorkspaceID, PublicKey: id.PublicKey(), OS: enroll.HostOS(), Arch: enroll.HostArch(),
			MachineName: machine, CanOfferDisplay: display,
		})
	}
	if err != nil {
		return nil, err
	}
	creds := enroll.StoredCredentials(wire, api, p.Channel)
	path, err := store.Save(creds)
	if err != nil {
		return nil, fmt.Errorf("save credentials: %w", err)
	}
	logger.Info("credentials saved", "path", path, "connection", creds.ID(), "workspace_id", creds.WorkspaceID, "agent_id", creds.AgentID)
	fmt.Fprintln(stdout, "Enrolled. This machine is now registered with OpenGeni.")
	return creds, nil
}

// existingConnection finds the connection this enrollment would create:
// by workspace (the flag, or the token's unverified claim), or, with neither
// (a bare re-run of `enroll`), any connection to this API. A malformed file
// is an error.
func existingConnection(store *config.Store, api string, p enrollParams) (*config.Credentials, error) {
	ws := p.WorkspaceID
	if p.Token != "" {
		if tws, ok := enroll.TokenWorkspaceID(p.Token); ok {
			ws = tws
		} else {
			return nil, nil // opaque token: exchange and overwrite
		}
	}
	if ws != "" {
		c, err := store.Load(config.ConnectionID(api, ws))
		if errors.Is(err, config.ErrNotEnrolled) {
			return nil, nil
		}
		return c, err
	}
	conns, err := store.List()
	if err != nil {
		return nil, err
	}
	for _, c := range conns {
		if c.Creds != nil && c.Creds.APIURL == api {
			return c.Creds, nil
		}
	}
	return nil, nil
}
