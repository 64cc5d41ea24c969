// Package platform is the platform side of OpenGeni composed in one place:
// NATS with the auth callout, the control-plane store (JetStream KV) and its
// ingestion of agents' hellos and heartbeats, the auth-callout responder,
// and the enrollment API on HTTP. `relay dev` (internal/devstack) runs it on
// an embedded nats-server; `relay platform` runs it against an external
// NATS cluster.
//
// NATS layout ([AccountsConfig]; one server or every node of a cluster):
//
//	accounts { APP { jetstream: enabled, users: [ control, auth, relay ] }, SYS { users: [ kick ] } }
//	system_account: SYS
//	authorization { auth_callout { issuer: <callout account key>, auth_users: [control, auth, relay, kick], account: APP } }
//
// The control user carries the store and ingestion; the auth user only
// answers the callout, from any node (the callout request is routed to it
// like any message in APP); the relay user may only watch the enrollments
// bucket; the kick user only asks a server (any node, through the system
// account) to drop a revoked enrollment's live connection. Agents connect
// with their oge_ bearer and the callout grants each one machine
// (internal/subject.AgentGrant). Every platform connection is given all the
// cluster's URLs and reconnects to any node.
//
// On a cluster the store's buckets should be replicated (Options.Replicas
// 3): a node's loss then keeps enrollments, machines and leases.
package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/authcallout"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/natsurl"
	"github.com/opengeni/opengeni-agent/relay/revocation"
)

// Defaults.
const (
	// DefaultAPIPort is the enrollment API's port.
	DefaultAPIPort = 8444
	// DefaultNATSPort is the embedded server's client port.
	DefaultNATSPort = 4222
)

// Options configure [Start].
type Options struct {
	// Secrets must all be set ([Secrets.Fill] makes a fresh set).
	Secrets Secrets
	// NATSURLs are the servers of an external NATS: a cluster's nodes (an
	// entry may itself be a comma-separated list). Empty runs an embedded
	// server configured by Embedded.
	NATSURLs []string
	// Embedded configures the embedded server (NATSURLs empty).
	Embedded EmbeddedNATS
	// AgentNATSURLs are handed to agents in their credentials (natsUrls);
	// default: the platform's own (NATSURLs, or the embedded server's).
	AgentNATSURLs []string
	// Replicas of the store's KV buckets: 1 (default) on one server, 3 on
	// a cluster of three or more.
	Replicas int
	// APIAddr is the enrollment API's listen address; default
	// 127.0.0.1:8444 (port 0 picks a free one).
	APIAddr string
	// PublicURL is the origin of the verification URIs the API hands out;
	// "" uses each request's own origin.
	PublicURL string
	// RelayURL is the stream relay handed to agents (with an ogr_ token
	// signed by Secrets.RelayTokenSecret); "" hands out none.
	RelayURL string
	// TrustedProxies may name the client in X-Forwarded-For for the API's
	// per-IP limits; from other peers the socket address is the client.
	TrustedProxies []netip.Prefix
	// Handlers are mounted on the API's HTTP server beside the enrollment
	// API, keyed by net/http ServeMux pattern ("/console/", "GET /device");
	// the enrollment API answers every path they do not claim. A web
	// console mounts here.
	Handlers map[string]http.Handler
	Logger   *slog.Logger
}

// EmbeddedNATS configures the in-process nats-server.
type EmbeddedNATS struct {
	Host       string // default 127.0.0.1
	Port       int    // default 4222; -1 picks a free port
	StoreDir   string // JetStream store directory; required
	ServerName string // default "opengeni"
}

// Platform is a running platform.
type Platform struct {
	opts Options
	log  *slog.Logger

	ns        *server.Server // embedded only
	natsURL   string         // comma-separated
	agentURLs []string
	storeNC   *nats.Conn // store + ingestion
	calloutNC *nats.Conn // the callout responder
	kickNC    *nats.Conn // system account: kicks
	store     *store.Store
	ingest    *store.Ingestor
	responder *authcallout.Responder
	httpSrv   *http.Server
	handler   atomic.Pointer[enroll.API]
	apiURL    string

	mu       sync.Mutex // relayURL, relays
	relayURL string
	relays   []*Relay
	once     sync.Once
	done     chan struct{}
}

// Start brings the platform up. It runs until ctx ends or Close is called;
// Done is closed once everything stopped.
func Start(ctx context.Context, opts Options) (_ *Platform, err error) {
	if err := opts.Secrets.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.APIAddr == "" {
		opts.APIAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultAPIPort))
	}
	p := &Platform{opts: opts, log: opts.Logger.With("component", "platform"), done: make(chan struct{})}
	defer func() {
		if err != nil {
			p.shutdown()
		}
	}()
	if len(opts.NATSURLs) == 0 {
		if err := p.startEmbedded(); err != nil {
			return nil, err
		}
	} else {
		p.natsURL = strings.Join(natsurl.Split(opts.NATSURLs...), ",")
	}
	p.agentURLs = natsurl.Split(p.natsURL)
	if len(opts.AgentNATSURLs) > 0 {
		p.agentURLs = natsurl.Split(opts.AgentNATSURLs...)
	}
	if err := p.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if err := p.startAPI(); err != nil {
		return nil, err
	}
	p.log.Info("platform up", "nats", p.natsURL, "embedded", p.ns != nil, "replicas", max(opts.Replicas, 1), "api", p.apiURL)
	go func() {
		select {
		case <-ctx.Done():
			p.Close()
		case <-p.done:
		}
	}()
	return p, nil
}

func (p *Platform) startEmbedded() error {
	e := p.opts.Embedded
	if e.StoreDir == "" {
		return errors.New("platform: the embedded nats-server needs a JetStream store directory")
	}
	conf, err := embeddedConfig(p.opts.Secrets)
	if err != nil {
		return err
	}
	o := &server.Options{}
	if err := o.ProcessConfigString(conf); err != nil {
		return fmt.Errorf("platform: nats config: %w", err)
	}
	o.ServerName = e.ServerName
	if o.ServerName == "" {
		o.ServerName = "opengeni"
	}
	o.Host, o.Port = e.Host, e.Port
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	switch {
	case o.Port < 0:
		o.Port = server.RANDOM_PORT
	case o.Port == 0:
		o.Port = DefaultNATSPort
	}
	o.NoSigs, o.NoLog = true, true
	o.JetStream = true
	o.StoreDir = e.StoreDir
	o.AuthTimeout = 5
	ns, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("platform: nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return errors.New("platform: nats-server did not start")
	}
	p.ns = ns
	acc, err := ns.LookupAccount(AppAccount)
	if err != nil || !acc.JetStreamEnabled() {
		return fmt.Errorf("platform: JetStream is not enabled on account %s (%v)", AppAccount, err)
	}
	p.natsURL = ns.ClientURL()
	return nil
}

// ControlNATSOptions authenticate a connection as the control user.
func (p *Platform) ControlNATSOptions() []nats.Option {
	// Agents may subscribe _INBOX.> (the wire contract's grant), so every
	// control-plane connection, the KV store's included, takes its replies
	// on the private prefix.
	return []nats.Option{nats.UserInfo(ControlUser, p.opts.Secrets.ControlPassword), nats.CustomInboxPrefix(control.InboxPrefix)}
}

// ControlConn opens a new connection as the control user; the caller
// closes it.
func (p *Platform) ControlConn(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name("opengeni-platform-control")}, p.ControlNATSOptions()...)
	return nats.Connect(p.natsURL, append(all, opts...)...)
}

// ControlConnFactory dials the platform as the control user (for
// control.NewNATSRPC).
func (p *Platform) ControlConnFactory(opts ...nats.Option) control.ConnFactory {
	return control.DialNATS(p.natsURL, append(p.ControlNATSOptions(), opts...)...)
}

// serviceConn is one of the platform's own long-lived connections: every
// URL, reconnecting forever to whichever node is up.
func (p *Platform) serviceConn(name string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				p.log.Warn("NATS connection lost; reconnecting", "conn", name, "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			p.log.Info("NATS connection back", "conn", name, "server", nc.ConnectedServerName())
		})}, opts...)
	nc, err := nats.Connect(p.natsURL, all...)
	if err != nil {
		return nil, fmt.Errorf("platform: %s connection to %s: %w", name, p.natsURL, err)
	}
	return nc, nil
}

func (p *Platform) startControlPlane(ctx context.Context) error {
	s := p.opts.Secrets
	var err error
	if p.storeNC, err = p.serviceConn("opengeni-platform-store", p.ControlNATSOptions()...); err != nil {
		return err
	}
	js, err := jetstream.New(p.storeNC)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if p.store, err = store.New(sctx, js, store.Options{Replicas: p.opts.Replicas, Logger: p.opts.Logger}); err != nil {
		return fmt.Errorf("platform: store (replicas %d): %w", max(p.opts.Replicas, 1), err)
	}
	if p.ingest, err = p.store.Ingest(p.storeNC); err != nil {
		return err
	}
	kp, err := nkeys.FromSeed([]byte(s.CalloutSeed))
	if err != nil {
		return err
	}
	if p.kickNC, err = p.serviceConn("opengeni-platform-kick", nats.UserInfo(KickUser, s.SysPassword)); err != nil {
		return err
	}
	p.responder, err = authcallout.New(authcallout.Config{
		Issuer: kp, SigningSecret: s.SigningSecret, Enrollments: p.store, Leases: p.store, Logger: p.opts.Logger,
		Kicker: authcallout.SysKicker{Conn: p.kickNC},
	})
	if err != nil {
		return err
	}
	if p.calloutNC, err = p.serviceConn("opengeni-platform-authcallout", nats.UserInfo(CalloutUser, s.CalloutPassword)); err != nil {
		return err
	}
	return p.responder.Start(p.calloutNC, p.store)
}

// newAPI builds the enrollment API handing out relayURL.
func (p *Platform) newAPI(relayURL string) (*enroll.API, error) {
	relaySecret := ""
	if relayURL != "" {
		relaySecret = p.opts.Secrets.RelayTokenSecret
	}
	return enroll.New(enroll.Config{
		Store: p.store, Authorizer: enroll.StaticToken{Token: p.opts.Secrets.AdminToken, Label: "platform admin"},
		Enabled: true, SigningSecret: p.opts.Secrets.SigningSecret, RelayTokenSecret: relaySecret,
		NATSURL: strings.Join(p.agentURLs, ","), RelayURL: relayURL, PublicURL: p.opts.PublicURL,
		TrustedProxies: p.opts.TrustedProxies, Logger: p.opts.Logger,
	})
}

// SetRelayURL changes the stream relay handed to agents (for a relay
// started after the platform); pairings and exchanges from now on carry it.
func (p *Platform) SetRelayURL(relayURL string) error {
	api, err := p.newAPI(relayURL)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.relayURL = relayURL
	p.mu.Unlock()
	p.handler.Store(api)
	return nil
}

// RelayURL is the stream relay handed to agents now.
func (p *Platform) RelayURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayURL
}

// mux routes the extra handlers and, for every other path, the current
// enrollment API. A conflicting pattern is an error, not a panic.
func (p *Platform) mux() (_ *http.ServeMux, err error) {
	m := http.NewServeMux()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("platform: handlers: %v", r)
		}
	}()
	for pattern, h := range p.opts.Handlers {
		m.Handle(pattern, h)
	}
	m.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.handler.Load().ServeHTTP(w, r) }))
	return m, nil
}

func (p *Platform) startAPI() error {
	if err := p.SetRelayURL(p.opts.RelayURL); err != nil {
		return err
	}
	m, err := p.mux()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", p.opts.APIAddr)
	if err != nil {
		return fmt.Errorf("platform: enrollment API: %w", err)
	}
	p.apiURL = "http://" + ln.Addr().String()
	p.httpSrv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: m}
	go func() {
		if err := p.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("enrollment API stopped", "err", err)
		}
	}()
	return nil
}

// NATSURL is the platform's NATS: the embedded server's client URL, or the
// external servers, comma-separated (nats.Connect takes either).
func (p *Platform) NATSURL() string { return p.natsURL }

// AgentNATSURLs are the NATS URLs handed to agents.
func (p *Platform) AgentNATSURLs() []string { return append([]string(nil), p.agentURLs...) }

// APIURL is the enrollment API's base URL (http://<listen address>).
func (p *Platform) APIURL() string { return p.apiURL }

// APIHandler is the enrollment API (the one SetRelayURL last built), for a
// web console that drives pairing through it in process.
func (p *Platform) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.handler.Load().ServeHTTP(w, r) })
}

// Admin is a client of the enrollment API with the admin bearer.
func (p *Platform) Admin() AdminClient {
	return AdminClient{BaseURL: p.apiURL, Token: p.opts.Secrets.AdminToken, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// Store is the control-plane store.
func (p *Platform) Store() *store.Store { return p.store }

// Conn is the platform's control-user connection (store and ingestion);
// do not close it.
func (p *Platform) Conn() *nats.Conn { return p.storeNC }

// Server is the embedded nats-server; nil on an external NATS.
func (p *Platform) Server() *server.Server { return p.ns }

// RelayRevocationConfig is how a relay reaches NATS for revocations: the
// relay user.
func (p *Platform) RelayRevocationConfig() revocation.Config {
	return revocation.Config{URL: p.natsURL, User: RelayUser, Password: p.opts.Secrets.RelayNATSPassword,
		Bucket: store.EnrollmentsBucket("")}
}

// Done is closed once the platform stopped.
func (p *Platform) Done() <-chan struct{} { return p.done }

// Close stops everything (idempotent) and waits for it.
func (p *Platform) Close() {
	p.once.Do(func() {
		p.shutdown()
		close(p.done)
	})
	<-p.done
}

func (p *Platform) shutdown() {
	p.mu.Lock()
	relays := p.relays
	p.mu.Unlock()
	for _, r := range relays {
		r.Close()
	}
	if p.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = p.httpSrv.Shutdown(ctx)
		cancel()
	}
	if p.responder != nil {
		p.responder.Close()
	}
	if p.ingest != nil {
		p.ingest.Close()
	}
	for _, nc := range []*nats.Conn{p.calloutNC, p.kickNC, p.storeNC} {
		if nc != nil {
			nc.Close()
		}
	}
	if p.ns != nil {
		p.ns.Shutdown()
		p.ns.WaitForShutdown()
	}
}
