package revocation

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/control/store"
)

// Env var names of the relay's NATS connection (`relay serve`).
const (
	EnvNATSURL      = "OPENGENI_RELAY_NATS_URL"
	EnvNATSUser     = "OPENGENI_RELAY_NATS_USER"
	EnvNATSPassword = "OPENGENI_RELAY_NATS_PASSWORD"
	EnvNATSToken    = "OPENGENI_RELAY_NATS_TOKEN"
	EnvNATSCreds    = "OPENGENI_RELAY_NATS_CREDS"
	EnvBucket       = "OPENGENI_RELAY_ENROLLMENTS_BUCKET"
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

// ApplyEnv fills c from the environment (getenv is usually os.Getenv).
func (c *Config) ApplyEnv(getenv func(string) string) {
	for _, f := range []struct {
		name string
		dst  *string
	}{{EnvNATSURL, &c.URL}, {EnvNATSUser, &c.User}, {EnvNATSPassword, &c.Password},
		{EnvNATSToken, &c.Token}, {EnvNATSCreds, &c.Creds}, {EnvBucket, &c.Bucket}} {
		if v := getenv(f.name); v != "" {
			*f.dst = v
		}
	}
}

// RegisterFlags binds the flags to c (call ApplyEnv first: a flag wins).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	if c.Bucket == "" {
		c.Bucket = store.EnrollmentsBucket("")
	}
	fs.StringVar(&c.URL, "nats-url", c.URL, "platform NATS for revocations: agents of revoked enrollments are refused and their channels closed; empty turns revocation checking off (env "+EnvNATSURL+")")
	fs.StringVar(&c.User, "nats-user", c.User, "NATS user (env "+EnvNATSUser+")")
	fs.StringVar(&c.Password, "nats-password", c.Password, "NATS password; prefer the env var (env "+EnvNATSPassword+")")
	fs.StringVar(&c.Token, "nats-token", c.Token, "NATS token; prefer the env var (env "+EnvNATSToken+")")
	fs.StringVar(&c.Creds, "nats-creds", c.Creds, "NATS .creds file (env "+EnvNATSCreds+")")
	fs.StringVar(&c.Bucket, "enrollments-bucket", c.Bucket, "the platform's enrollments KV bucket (env "+EnvBucket+")")
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
