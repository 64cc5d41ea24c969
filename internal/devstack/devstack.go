// Package devstack runs the whole system on one machine for development and
// trials: an embedded nats-server and a stream relay on loopback, and an
// in-process agent that serves this machine (terminals included). `relay dev`
// is a thin wrapper around it.
//
// The relay's secrets are generated per run. The viewer (stream-token)
// secret and the relay URL are written to Dir() (mode 0600, removed on
// stop) so `relay ctl shell` on the same account can attach without flags.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/agent"
)

// Defaults used by `relay dev` and, symmetrically, by `relay ctl`.
const (
	DefaultNATSPort    = 4222
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
	Logger        *slog.Logger
}

// Stack is a running dev system.
type Stack struct {
	opts     Options
	nats     *server.Server
	agent    *agent.Agent
	relayURL string
	secret   []byte // the relay's stream-token (viewer) secret
	files    []string
	done     chan error
}

// Start brings the stack up; it runs until ctx ends, then Wait returns.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.NATSPort == 0 {
		opts.NATSPort = DefaultNATSPort
	}
	if opts.WorkspaceID == "" {
		opts.WorkspaceID = DefaultWorkspaceID
	}
	if opts.AgentID == "" {
		opts.AgentID = DefaultAgentID
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	port := opts.NATSPort
	if port < 0 {
		port = server.RANDOM_PORT
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "opengeni-dev",
		Host:       opts.Host,
		Port:       port,
		NoSigs:     true, // the binary owns signals
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: nats-server: %w", err)
	}
	if port != server.RANDOM_PORT {
		// Fail with a clear message instead of nats-server's fatal log.
		l, err := net.Listen("tcp", net.JoinHostPort(opts.Host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("devstack: NATS port %d is busy (another `relay dev`?): %w", port, err)
		}
		l.Close()
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("devstack: nats-server did not start")
	}
	rl, err := startRelay(opts)
	if err != nil {
		ns.Shutdown()
		return nil, err
	}
	a, err := agent.New(agent.Options{
		Servers:       []string{ns.ClientURL()},
		WorkspaceID:   opts.WorkspaceID,
		AgentID:       opts.AgentID,
		WorkspaceRoot: opts.WorkspaceRoot,
		Logger:        opts.Logger,
		RelayURL:      rl.url,
		RelayToken:    rl.agentToken,
	})
	if err != nil {
		rl.stop()
		ns.Shutdown()
		return nil, err
	}
	s := &Stack{opts: opts, nats: ns, agent: a, relayURL: rl.url, secret: rl.streamSecret, done: make(chan error, 1)}
	s.files, err = writeDevFiles(rl.url, rl.streamSecret)
	if err != nil {
		opts.Logger.Warn("dev relay files not written; pass the viewer secret explicitly", "err", err)
	}
	go func() {
		err := a.Run(ctx) // closes its terminals while the relay still runs
		rl.stop()
		for _, f := range s.files {
			os.Remove(f)
		}
		ns.Shutdown()
		ns.WaitForShutdown()
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
func (s *Stack) NATSURL() string { return s.nats.ClientURL() }

// WorkspaceID and AgentID name the local machine.
func (s *Stack) WorkspaceID() string { return s.opts.WorkspaceID }
func (s *Stack) AgentID() string     { return s.opts.AgentID }

// Agent is the in-process agent.
func (s *Stack) Agent() *agent.Agent { return s.agent }

// Wait blocks until the stack stopped (after its context ended).
func (s *Stack) Wait() error { return <-s.done }
