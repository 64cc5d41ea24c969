// Package devstack runs the whole system on one machine for development and
// trials: an embedded nats-server and a stream relay on loopback, and an
// in-process agent that serves this machine (terminals included). `relay dev`
// is a thin wrapper around it.
//
// The relay's secrets are the platform's. The viewer (stream-token) secret
// and the relay URL are written to the platform's data directory (mode
// 0600, removed on stop) so `relay ctl shell` on the same account can attach
// without flags. Every file of the stack lives in that directory. The relay
// watches the enrollments bucket as the least-privileged relay NATS user, so
// revoking the machine closes its relay channels too.
package devstack

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/platform"
)

// Defaults used by `relay dev` and, symmetrically, by `relay ctl`.
const (
	DefaultNATSPort    = platform.DefaultNATSPort
	DefaultRelayPort   = 8443
	DefaultWorkspaceID = "dev"
	DefaultAgentID     = "local"
)

// Options configure a Stack.
type Options struct {
	Host          string // listen host; default 127.0.0.1 (never exposed by default)
	NATSPort      int    // default 4222; -1 picks a free port
	RelayPort     int    // default 8443; -1 picks a free port
	WorkspaceID   string // default "dev"
	AgentID       string // default "local"
	WorkspaceRoot string // default: the process working directory
	DataDir       string // platform state; default PlatformDataDir()
	// VirtualDesktop lets the local agent start an Xvfb for desktop_ensure
	// when this machine has no display.
	VirtualDesktop bool
	// AllowScreenControl records the owner's screen-control consent for the
	// local machine in its agent config dir at start (`relay dev
	// --allow-screen-control`). Without it the stored consent stands (off
	// for a fresh pairing); the agent reads it live either way.
	AllowScreenControl bool
	APIPort            int // enrollment API; default 8444; -1 picks a free port
	// TrustedProxies may name the client in X-Forwarded-For (enrollment API
	// and relay per-IP limits); default none: the socket address.
	TrustedProxies []netip.Prefix
	Out            io.Writer
	Logger         *slog.Logger
}

// Stack is a running dev system.
type Stack struct {
	opts     Options
	platform *Platform
	agent    *agent.Agent
	relayURL string
	secret   []byte // the relay's stream-token (viewer) secret
	files    []string
	done     chan error
	// screenControl reads the local machine's consent live.
	screenControl func() bool
}

// Start brings the stack up; it runs until ctx ends, then Wait returns.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	// The platform outlives ctx: the agent says GoingOffline before NATS stops.
	p, err := StartPlatform(context.WithoutCancel(ctx), PlatformOptions{DataDir: opts.DataDir, Host: opts.Host,
		NATSPort: opts.NATSPort, HTTPPort: opts.APIPort, TrustedProxies: opts.TrustedProxies, Out: opts.Out, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	relayPort := opts.RelayPort
	if relayPort == 0 {
		relayPort = DefaultRelayPort
	}
	relayPort = max(relayPort, 0)
	if err := portFree(opts.Host, relayPort, "relay", "-relay-port"); err != nil {
		p.Close()
		return nil, err
	}
	// The relay runs apart from ctx: the agent closes its terminals
	// through it before it stops.
	rl, err := p.StartRelay(ctx, platform.RelayOptions{Addr: net.JoinHostPort(opts.Host, strconv.Itoa(relayPort)),
		TrustedProxies: opts.TrustedProxies})
	if err != nil {
		p.Close()
		return nil, err
	}
	creds, err := p.EnrollLocalMachine(ctx, p.AgentConfigDir())
	if err != nil {
		rl.Close()
		p.Close()
		return nil, err
	}
	opts.WorkspaceID, opts.AgentID = creds.WorkspaceID, creds.AgentID
	cs := config.NewStore(p.AgentConfigDir())
	if opts.AllowScreenControl {
		if err := cs.SetScreenControl(creds.ID(), true); err != nil {
			rl.Close()
			p.Close()
			return nil, fmt.Errorf("devstack: record screen-control consent: %w", err)
		}
	}
	a, err := agent.New(agent.Options{
		Servers: creds.NATSURLs, Token: creds.NATSBearer, WorkspaceID: creds.WorkspaceID, AgentID: creds.AgentID,
		WorkspaceRoot: opts.WorkspaceRoot, Logger: opts.Logger, RelayURL: creds.RelayURL, RelayToken: creds.RelayToken,
		VirtualDesktop: opts.VirtualDesktop,
		// Read live, like `opengeni-agent run`: `opengeni-agent consent`
		// with OPENGENI_CONFIG_DIR=<data dir>/agent applies at once.
		Consent: func() agent.Consent {
			w, sc := cs.Consent(creds.ID())
			return agent.Consent{WholeMachine: w, ScreenControl: sc}
		},
	})
	if err != nil {
		rl.Close()
		p.Close()
		return nil, err
	}
	secret := []byte(p.StreamTokenSecret())
	s := &Stack{opts: opts, platform: p, agent: a, relayURL: rl.URL(), secret: secret, done: make(chan error, 1),
		screenControl: func() bool { _, sc := cs.Consent(creds.ID()); return sc }}
	s.files, err = writeDevFiles(p.DataDir(), rl.URL(), secret)
	if err != nil {
		opts.Logger.Warn("dev relay files not written; pass the viewer secret explicitly", "err", err)
	}
	go func() {
		err := a.Run(ctx) // closes its terminals while the relay still runs
		rl.Close()
		for _, f := range s.files {
			os.Remove(f)
		}
		p.Close()
		s.done <- err
	}()
	return s, nil
}

// RelayURL is the relay's dial base (ws://127.0.0.1:<port>/stream).
func (s *Stack) RelayURL() string { return s.relayURL }

// StreamSecret is the relay's viewer (stream-token) secret of this run.
func (s *Stack) StreamSecret() []byte { return s.secret }

// SecretFile is where the viewer secret was written ("" if it was not).
func (s *Stack) SecretFile() string {
	if len(s.files) > 0 {
		return s.files[0]
	}
	return ""
}

// NATSURL is the embedded server's client URL.
func (s *Stack) NATSURL() string { return s.platform.NATSURL() }

// Platform is the running platform (enrollment API, store, admin token).
func (s *Stack) Platform() *Platform { return s.platform }

// WorkspaceID and AgentID name the local machine.
func (s *Stack) WorkspaceID() string { return s.opts.WorkspaceID }
func (s *Stack) AgentID() string     { return s.opts.AgentID }

// ScreenControl reports the local machine's screen-control consent now (read
// from its agent config dir, as the agent reads it).
func (s *Stack) ScreenControl() bool { return s.screenControl() }

// Agent is the in-process agent.
func (s *Stack) Agent() *agent.Agent { return s.agent }

// Wait blocks until the stack stopped (after its context ended).
func (s *Stack) Wait() error { return <-s.done }
