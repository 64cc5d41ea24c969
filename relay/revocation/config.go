package revocation

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
)

// Config is how `relay serve` reaches the platform's NATS for revocations.
// An empty URL turns revocation checking off.
type Config struct {
	URL      string
	User     string
	Password string
	Token    string
	Creds    string // a .creds file (JWT + nkey seed)
	Bucket   string // default store.EnrollmentsBucket("")
}

// Enabled reports whether revocation checking is configured.
func (c *Config) Enabled() bool { return c.URL != "" }

// Options are the nats.Options of the relay's connection: the credentials,
// the relay's inbox prefix, and reconnecting forever (an unreachable server
// at start is retried in the background, not fatal).
func (c *Config) Options(log *slog.Logger) ([]nats.Option, error) {
	if c.Token != "" && (c.User != "" || c.Creds != "") || c.User != "" && c.Creds != "" {
		return nil, errors.New("revocation: give one of NATS user/password, token or creds")
	}
	opts := []nats.Option{nats.Name("opengeni-relay"), nats.CustomInboxPrefix(InboxPrefix),
		nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("relay NATS disconnected: agent opens are refused until the revocation watch resyncs", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("relay NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("relay NATS error", "err", err) }),
	}
	switch {
	case c.User != "":
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	case c.Token != "":
		opts = append(opts, nats.Token(c.Token))
	case c.Creds != "":
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	return opts, nil
}

// Dial opens the relay's NATS connection with c's options. The relay uses
// one connection for the revocation watch and, when it runs as one of
// several replicas, for routing channels between them (relay.Options.NATS).
func (c *Config) Dial(log *slog.Logger) (*nats.Conn, error) {
	if log == nil {
		log = slog.Default()
	}
	opts, err := c.Options(log)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("revocation: connect %s: %w", c.URL, err)
	}
	if !nc.IsConnected() {
		log.Warn("relay NATS unreachable; retrying. Until the revocation watch syncs, agent opens are refused (fail closed)", "url", c.URL)
	}
	return nc, nil
}

// Connect dials NATS and starts the watch. The returned stop closes both.
func (c *Config) Connect(log *slog.Logger) (*Watcher, func(), error) {
	w, nc, err := c.ConnectConn(log)
	if err != nil {
		return nil, nil, err
	}
	return w, func() {
		w.Close()
		nc.Close()
	}, nil
}

// ConnectConn is Connect that also returns the connection (for replica
// routing); the caller closes the watcher, then the connection.
func (c *Config) ConnectConn(log *slog.Logger) (*Watcher, *nats.Conn, error) {
	nc, err := c.Dial(log)
	if err != nil {
		return nil, nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	return Start(nc, Options{Bucket: c.Bucket, Logger: log}), nc, nil
}
