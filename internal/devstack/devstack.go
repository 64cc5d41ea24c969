// Package devstack runs the whole system on one machine for development and
// trials: an embedded nats-server on loopback and an in-process agent that
// serves this machine. `relay dev` is a thin wrapper around it.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/opengeni/opengeni-agent/agent"
)

// Defaults used by `relay dev` and, symmetrically, by `relay ctl`.
const (
	DefaultNATSPort    = 4222
	DefaultWorkspaceID = "dev"
	DefaultAgentID     = "local"
)

// Options configure a Stack.
type Options struct {
	Host          string // listen host; default 127.0.0.1 (never exposed by default)
	NATSPort      int    // default 4222; -1 picks a free port
	WorkspaceID   string // default "dev"
	AgentID       string // default "local"
	WorkspaceRoot string // default: the process working directory
	Logger        *slog.Logger
}

// Stack is a running dev system.
type Stack struct {
	opts  Options
	nats  *server.Server
	agent *agent.Agent
	done  chan error
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
	a, err := agent.New(agent.Options{
		Servers:       []string{ns.ClientURL()},
		WorkspaceID:   opts.WorkspaceID,
		AgentID:       opts.AgentID,
		WorkspaceRoot: opts.WorkspaceRoot,
		Logger:        opts.Logger,
	})
	if err != nil {
		ns.Shutdown()
		return nil, err
	}
	s := &Stack{opts: opts, nats: ns, agent: a, done: make(chan error, 1)}
	go func() {
		err := a.Run(ctx)
		ns.Shutdown()
		ns.WaitForShutdown()
		s.done <- err
	}()
	return s, nil
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
