package devstack

// The whole platform on one machine (control.md §6, issue 6 part 5): an
// embedded nats-server with JetStream and the auth callout, the
// control-plane store and its ingestion, the enrollment API on loopback
// HTTP, and pairing of the local machine through the real device flow.
//
// NATS layout (one server, no operator):
//
//	accounts { APP { jetstream: enabled, users: [ control (least privilege), auth (callout only), relay (enrollments watch only) ] }, SYS {} }
//	system_account: SYS
//	authorization { auth_callout { issuer: <callout account key>, auth_users: [control, auth, relay], account: APP } }
//
// The relay user may only watch the enrollments bucket (revocations reach
// the stream relay that way).
//
// The control user bypasses the callout and carries the store (JetStream KV
// in APP) and ingestion; the auth user only answers the callout. Agents
// connect with their oge_ bearer and the callout grants each one machine
// (internal/subject.AgentGrant: its own rpc, events, hello and inbox; no
// $JS.API, no shared inbox). Accounts defined in configuration get
// JetStream only when the account itself says "jetstream: enabled", so the
// server is configured from a config string rather than from
// server.Options.Accounts.
//
// State under the data directory (0700; every file 0600):
//
//	platform.json   workspace id, signing secrets, callout seed, control password, admin token
//	admin.token     the enrollment API's admin bearer (for curl)
//	ctl.json        what `relay ctl` needs: NATS URL, control user, workspace, agent
//	jetstream/      the JetStream store (enrollments, devices, machines buckets)

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/authcallout"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/subject"
	"github.com/opengeni/opengeni-agent/relay/revocation"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// Platform defaults and file names.
const (
	// DefaultAPIPort is the enrollment API's loopback port.
	DefaultAPIPort = 8444
	// EnvDevData overrides the platform's data directory.
	EnvDevData = "OPENGENI_DEV_DATA"
	// ControlUser is the control plane's NATS user (it bypasses the callout).
	ControlUser = "control"
	// CalloutUser is the auth-callout responder's NATS user (it bypasses the
	// callout and may only answer it).
	CalloutUser = "auth"
	// RelayUser is the stream relay's NATS user (it bypasses the callout):
	// it may only watch the enrollments bucket.
	RelayUser = "relay"

	PlatformStateFile = "platform.json"
	AdminTokenFile    = "admin.token"
	CtlFileName       = "ctl.json"
	JetStreamDir      = "jetstream"
)

// minBearerLife: a stored bearer closer than this to its expiry is not
// reused; the machine pairs again (same identity key → same agent id).
const minBearerLife = 24 * time.Hour

// PlatformOptions configure [StartPlatform].
type PlatformOptions struct {
	// DataDir holds the persistent state; default $OPENGENI_DEV_DATA, else
	// <user cache dir>/opengeni-dev.
	DataDir string
	Host    string // listen host; default 127.0.0.1
	// NATSPort default 4222, HTTPPort (the enrollment API) default 8444;
	// -1 picks a free port.
	NATSPort, HTTPPort int
	// WorkspaceID is the local workspace (a UUID: the device flow requires
	// one); default: generated at first start and persisted.
	WorkspaceID string
	// RelayURL is the stream relay handed to agents in their credentials
	// (with an ogr_ token signed by RelayTokenSecret); "" hands out none.
	RelayURL string
	// TrustedProxies may name the client in X-Forwarded-For for the
	// enrollment API's per-IP limits; from other peers the socket address
	// is the client.
	TrustedProxies []netip.Prefix
	// Out receives what a human needs: the admin token, the pairing code.
	// nil discards.
	Out    io.Writer
	Logger *slog.Logger
}

// platformState is platform.json.
type platformState struct {
	WorkspaceID       string    `json:"workspaceId"`
	SigningSecret     string    `json:"signingSecret"`     // oge_ bearers, oget_ enroll tokens
	RelayTokenSecret  string    `json:"relayTokenSecret"`  // ogr_ agent relay tokens
	StreamTokenSecret string    `json:"streamTokenSecret"` // ogs_ viewer stream tokens
	CalloutSeed       string    `json:"calloutSeed"`       // SA… account seed: the callout issuer
	ControlPassword   string    `json:"controlPassword"`
	CalloutPassword   string    `json:"calloutPassword"`
	RelayNATSPassword string    `json:"relayNatsPassword"` // the relay's NATS user (revocation watch)
	AdminToken        string    `json:"adminToken"`
	CreatedAt         time.Time `json:"createdAt"`
}

// CtlFile is ctl.json: how `relay ctl` reaches the platform without flags.
type CtlFile struct {
	NATSURL     string `json:"natsUrl"`
	User        string `json:"user"`
	Password    string `json:"password"`
	WorkspaceID string `json:"workspaceId"`
	AgentID     string `json:"agentId,omitempty"` // the local machine, once paired
	APIURL      string `json:"apiUrl"`
}

// NATSOptions authenticate as the control user.
func (c *CtlFile) NATSOptions() []nats.Option {
	return []nats.Option{nats.UserInfo(c.User, c.Password)}
}

// ConnFactory dials the platform as the control user.
func (c *CtlFile) ConnFactory(opts ...nats.Option) control.ConnFactory {
	return control.DialNATS(c.NATSURL, append(c.NATSOptions(), opts...)...)
}

// PlatformDataDir resolves the default data directory: $OPENGENI_DEV_DATA,
// else <user cache dir>/opengeni-dev.
func PlatformDataDir() (string, error) {
	if d := os.Getenv(EnvDevData); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("devstack: no data directory (set $%s): %w", EnvDevData, err)
	}
	return filepath.Join(base, "opengeni-dev"), nil
}

// ReadCtlFile reads <dataDir>/ctl.json ("" = the default data directory).
func ReadCtlFile(dataDir string) (*CtlFile, error) {
	if dataDir == "" {
		d, err := PlatformDataDir()
		if err != nil {
			return nil, err
		}
		dataDir = d
	}
	b, err := os.ReadFile(filepath.Join(dataDir, CtlFileName))
	if err != nil {
		return nil, err
	}
	var c CtlFile
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("devstack: %s: %w", CtlFileName, err)
	}
	if c.NATSURL == "" || c.User == "" {
		return nil, fmt.Errorf("devstack: %s: no NATS URL or user", CtlFileName)
	}
	return &c, nil
}

// Platform is a running dev platform.
type Platform struct {
	opts    PlatformOptions
	log     *slog.Logger
	out     io.Writer
	dataDir string
	state   platformState
	ws      string

	ns        *server.Server
	storeNC   *nats.Conn // store + ingestion
	calloutNC *nats.Conn // the callout responder
	store     *store.Store
	ingest    *store.Ingestor
	responder *authcallout.Responder
	httpSrv   *http.Server
	handler   atomic.Pointer[enroll.API]
	ui        atomic.Pointer[http.Handler] // console: the web console (SetUI), issue 17
	apiURL    string
	http      *http.Client

	mu       sync.Mutex // ctl.json writes; relayURL
	relayURL string
	once     sync.Once
	done     chan struct{}
	ctlFn    string
}

// StartPlatform brings the platform up. It runs until ctx ends or Close is
// called; Done is closed once everything stopped.
func StartPlatform(ctx context.Context, opts PlatformOptions) (_ *Platform, err error) {
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.NATSPort == 0 {
		opts.NATSPort = DefaultNATSPort
	}
	if opts.HTTPPort == 0 {
		opts.HTTPPort = DefaultAPIPort
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.WorkspaceID != "" && uuid.Validate(opts.WorkspaceID) != nil {
		return nil, fmt.Errorf("devstack: workspace id %q is not a UUID (the device flow requires one)", opts.WorkspaceID)
	}
	if opts.DataDir == "" {
		if opts.DataDir, err = PlatformDataDir(); err != nil {
			return nil, err
		}
	}
	p := &Platform{opts: opts, log: opts.Logger.With("component", "devplatform"), out: opts.Out, dataDir: opts.DataDir,
		done: make(chan struct{}), ctlFn: filepath.Join(opts.DataDir, CtlFileName),
		http: &http.Client{Timeout: 30 * time.Second}}
	if err := platPrivateDir(p.dataDir); err != nil {
		return nil, err
	}
	var adminCreated bool
	if p.state, adminCreated, err = platLoadState(filepath.Join(p.dataDir, PlatformStateFile)); err != nil {
		return nil, err
	}
	p.ws = p.state.WorkspaceID
	if opts.WorkspaceID != "" {
		p.ws = opts.WorkspaceID
	}
	if err := config.WriteFileAtomic(p.AdminTokenFile(), []byte(p.state.AdminToken+"\n")); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.shutdown()
		}
	}()
	if err := p.startNATS(); err != nil {
		return nil, err
	}
	if err := p.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if err := p.startAPI(); err != nil {
		return nil, err
	}
	prev, _ := ReadCtlFile(p.dataDir)
	agentID := ""
	if prev != nil && prev.WorkspaceID == p.ws {
		agentID = prev.AgentID
	}
	if err := p.writeCtl(agentID); err != nil {
		return nil, err
	}
	// The token is shown once, when it is made; later starts say where it is.
	if adminCreated {
		fmt.Fprintf(p.out, "  admin token  %s   (new; shown only this once, stored in %s; send as \"Authorization: Bearer <token>\")\n",
			p.state.AdminToken, p.AdminTokenFile())
	} else {
		fmt.Fprintf(p.out, "  admin token  in %s   (send as \"Authorization: Bearer <token>\")\n", p.AdminTokenFile())
	}
	p.log.Info("dev platform up", "nats", p.NATSURL(), "api", p.apiURL, "workspace", p.ws, "data", p.dataDir)
	go func() {
		select {
		case <-ctx.Done():
			p.Close()
		case <-p.done:
		}
	}()
	return p, nil
}

// natsConfig is the server's account and callout configuration. Every user
// gets least privilege (docs/security.md): the control user only what the
// control plane does (subject.ControlPublish/ControlSubscribe), the callout
// user only the callout subject and its replies; agents get one machine
// each from the callout.
func (p *Platform) natsConfig() (string, error) {
	kp, err := nkeys.FromSeed([]byte(p.state.CalloutSeed))
	if err != nil {
		return "", fmt.Errorf("devstack: callout seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", err
	}
	// The relay user: least privilege for a KV watch of the enrollments
	// bucket and nothing else (revocation.NATSPermissions: stream info,
	// create/delete of its ordered consumer, flow-control replies; replies
	// and deliveries only under its private inbox prefix). Found by running
	// the watch with permissions on (relay/revocation_test.go).
	relayPub, relaySub := revocation.NATSPermissions(store.EnrollmentsBucket(""))
	return fmt.Sprintf(`
accounts {
  APP {
    jetstream: enabled
    users: [
      {user: %q, password: %q, permissions: { publish: { allow: [%s] }, subscribe: { allow: [%s] } }}
      {user: %q, password: %q, permissions: { publish: { deny: [">"] }, subscribe: { allow: [%q] }, allow_responses: true }}
      {user: %q, password: %q, permissions: { publish: { allow: [%s] }, subscribe: { allow: [%s] } }}
    ]
  }
  SYS {}
}
system_account: SYS
authorization {
  auth_callout {
    issuer: %q
    auth_users: [ %q, %q, %q ]
    account: APP
  }
}
`, ControlUser, p.state.ControlPassword, natsList(subject.ControlPublish), natsList(subject.ControlSubscribe),
		CalloutUser, p.state.CalloutPassword, subject.CalloutRequest,
		RelayUser, p.state.RelayNATSPassword, natsList(relayPub), natsList(relaySub),
		pub, ControlUser, CalloutUser, RelayUser), nil
}

// natsList quotes subjects for a nats-server config array.
func natsList(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// RelayRevocationConfig is how the dev relay reaches NATS for revocations:
// the relay user.
func (p *Platform) RelayRevocationConfig() revocation.Config {
	return revocation.Config{URL: p.NATSURL(), User: RelayUser, Password: p.state.RelayNATSPassword,
		Bucket: store.EnrollmentsBucket("")}
}

func (p *Platform) startNATS() error {
	conf, err := p.natsConfig()
	if err != nil {
		return err
	}
	o := &server.Options{}
	if err := o.ProcessConfigString(conf); err != nil {
		return fmt.Errorf("devstack: nats config: %w", err)
	}
	port := p.opts.NATSPort
	if port < 0 {
		port = server.RANDOM_PORT
	} else if err := platPortFree(p.opts.Host, port, "NATS", "-nats-port"); err != nil {
		return err
	}
	o.ServerName = "opengeni-dev"
	o.Host, o.Port = p.opts.Host, port
	o.NoSigs, o.NoLog = true, true
	o.JetStream = true
	o.StoreDir = filepath.Join(p.dataDir, JetStreamDir)
	o.AuthTimeout = 5
	ns, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("devstack: nats-server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(15 * time.Second) {
		ns.Shutdown()
		return errors.New("devstack: nats-server did not start")
	}
	p.ns = ns
	acc, err := ns.LookupAccount(authcallout.DefaultAccountName)
	if err != nil || !acc.JetStreamEnabled() {
		return fmt.Errorf("devstack: JetStream is not enabled on account %s (%v)", authcallout.DefaultAccountName, err)
	}
	return nil
}

// ControlNATSOptions authenticate a connection as the control user.
func (p *Platform) ControlNATSOptions() []nats.Option {
	// Agents may subscribe _INBOX.> (the wire contract's grant), so every
	// control-plane connection, the KV store's included, takes its replies
	// on the private prefix.
	return []nats.Option{nats.UserInfo(ControlUser, p.state.ControlPassword), nats.CustomInboxPrefix(control.InboxPrefix)}
}

// ControlConn opens a new connection as the control user; the caller
// closes it.
func (p *Platform) ControlConn(opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name("opengeni-dev-control")}, p.ControlNATSOptions()...)
	return nats.Connect(p.NATSURL(), append(all, opts...)...)
}

// ControlConnFactory dials the platform as the control user (for
// control.NewNATSRPC).
func (p *Platform) ControlConnFactory(opts ...nats.Option) control.ConnFactory {
	return control.DialNATS(p.NATSURL(), append(p.ControlNATSOptions(), opts...)...)
}

func (p *Platform) startControlPlane(ctx context.Context) error {
	var err error
	if p.storeNC, err = p.ControlConn(nats.Name("opengeni-dev-store"), nats.MaxReconnects(-1)); err != nil {
		return fmt.Errorf("devstack: control connection: %w", err)
	}
	js, err := jetstream.New(p.storeNC)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if p.store, err = store.New(sctx, js, store.Options{Logger: p.opts.Logger}); err != nil {
		return err
	}
	if p.ingest, err = p.store.Ingest(p.storeNC); err != nil {
		return err
	}
	kp, err := nkeys.FromSeed([]byte(p.state.CalloutSeed))
	if err != nil {
		return err
	}
	ns := p.ns
	p.responder, err = authcallout.New(authcallout.Config{
		Issuer: kp, SigningSecret: p.state.SigningSecret, Enrollments: p.store, Leases: p.store, Logger: p.opts.Logger,
		Kicker: authcallout.KickFunc(func(_ context.Context, _ string, cid uint64) error { return ns.DisconnectClientByID(cid) }),
	})
	if err != nil {
		return err
	}
	if p.calloutNC, err = nats.Connect(p.NATSURL(), nats.Name("opengeni-dev-authcallout"), nats.MaxReconnects(-1),
		nats.UserInfo(CalloutUser, p.state.CalloutPassword)); err != nil {
		return fmt.Errorf("devstack: callout connection: %w", err)
	}
	return p.responder.Start(p.calloutNC, p.store)
}

// newAPI builds the enrollment API handing out relayURL.
func (p *Platform) newAPI(relayURL string) (*enroll.API, error) {
	relaySecret := ""
	if relayURL != "" {
		relaySecret = p.state.RelayTokenSecret
	}
	return enroll.New(enroll.Config{
		Store: p.store, Authorizer: enroll.StaticToken{Token: p.state.AdminToken, Label: "relay dev admin"},
		Enabled: true, SigningSecret: p.state.SigningSecret, RelayTokenSecret: relaySecret,
		NATSURL: p.NATSURL(), RelayURL: relayURL, TrustedProxies: p.opts.TrustedProxies, Logger: p.opts.Logger,
	})
}

// SetRelayURL changes the stream relay handed to agents (for a relay
// started after the platform, with [Platform.RelayTokenSecret]); pairings
// and credential reuse from now on carry it.
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

func (p *Platform) currentRelayURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayURL
}

func (p *Platform) startAPI() error {
	if err := p.SetRelayURL(p.opts.RelayURL); err != nil {
		return err
	}
	port := max(p.opts.HTTPPort, 0)
	ln, err := net.Listen("tcp", net.JoinHostPort(p.opts.Host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("devstack: enrollment API port %d is busy (another `relay dev`? use -api-port): %w", port, err)
	}
	p.apiURL = "http://" + ln.Addr().String()
	p.httpSrv = &http.Server{ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// console: the web console serves every path outside the API (/device included).
			if ui := p.ui.Load(); ui != nil && !strings.HasPrefix(r.URL.Path, "/v1/") {
				(*ui).ServeHTTP(w, r)
				return
			}
			// The verification URI the API hands out (origin + /device).
			if r.URL.Path == "/device" {
				p.serveDevicePage(w, r)
				return
			}
			p.handler.Load().ServeHTTP(w, r)
		})}
	go func() {
		if err := p.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("enrollment API stopped", "err", err)
		}
	}()
	return nil
}

// console: SetUI serves h (the web console) on the enrollment API's origin
// for every path outside /v1/; APIHandler is the current enrollment API.
func (p *Platform) SetUI(h http.Handler) { p.ui.Store(&h) }

// console: APIHandler is the enrollment API (the one SetRelayURL last built).
func (p *Platform) APIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.handler.Load().ServeHTTP(w, r) })
}

// NATSURL is the embedded server's client URL.
func (p *Platform) NATSURL() string { return p.ns.ClientURL() }

// APIURL is the enrollment API's base URL (http://127.0.0.1:<port>).
func (p *Platform) APIURL() string { return p.apiURL }

// AdminToken is the enrollment API's admin bearer.
func (p *Platform) AdminToken() string { return p.state.AdminToken }

// AdminTokenFile is where the admin bearer is stored (0600).
func (p *Platform) AdminTokenFile() string { return filepath.Join(p.dataDir, AdminTokenFile) }

// WorkspaceID is the local workspace.
func (p *Platform) WorkspaceID() string { return p.ws }

// DataDir is the persistent state directory.
func (p *Platform) DataDir() string { return p.dataDir }

// AgentConfigDir is where the local machine's agent state (identity key,
// credentials) lives for `relay dev`: <data dir>/agent, apart from an
// installed agent's own config directory.
func (p *Platform) AgentConfigDir() string { return filepath.Join(p.dataDir, "agent") }

// CtlFile is the path of ctl.json.
func (p *Platform) CtlFile() string { return p.ctlFn }

// Store is the control-plane store.
func (p *Platform) Store() *store.Store { return p.store }

// Server is the embedded nats-server.
func (p *Platform) Server() *server.Server { return p.ns }

// RelayTokenSecret signs the agents' ogr_ relay tokens: configure the relay
// with it (relay.Options.RelayTokenSecret) so tokens survive restarts.
func (p *Platform) RelayTokenSecret() string { return p.state.RelayTokenSecret }

// StreamTokenSecret is the persisted viewer (ogs_) secret for the relay.
func (p *Platform) StreamTokenSecret() string { return p.state.StreamTokenSecret }

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
	for _, nc := range []*nats.Conn{p.calloutNC, p.storeNC} {
		if nc != nil {
			nc.Close()
		}
	}
	if p.ns != nil {
		p.ns.Shutdown()
		p.ns.WaitForShutdown()
	}
}

// AdminDo sends one admin request to the enrollment API (body JSON-encoded
// unless nil; a 2xx answer is decoded into out unless nil).
func (p *Platform) AdminDo(ctx context.Context, method, path string, body, out any) error {
	return adminDo(ctx, p.http, p.apiURL, p.state.AdminToken, method, path, body, out)
}

// adminDo is one admin request to the enrollment API at apiURL.
func adminDo(ctx context.Context, hc *http.Client, apiURL, adminToken, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, agentenroll.JoinURL(apiURL, path), rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		e := &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		var body struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &body) == nil && body.Error != "" {
			e.Message = body.Error
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// RevokeEnrollment revokes an enrollment of the local workspace through the
// API; the callout then disconnects its live connections.
func (p *Platform) RevokeEnrollment(ctx context.Context, agentID string) (bool, error) {
	var r struct {
		Revoked bool `json:"revoked"`
	}
	err := p.AdminDo(ctx, http.MethodPost, "/v1/workspaces/"+p.ws+"/enrollments/"+agentID+"/revoke", nil, &r)
	return r.Revoked, err
}

// EnrollLocalMachine pairs this machine with the local workspace and saves
// its credentials in configDir (agent/config layout). Stored credentials
// are reused (their NATS, API and relay addresses refreshed) while their
// enrollment is active and their bearer valid for at least a day;
// otherwise the real device flow runs: start, approve with the admin token
// (the user code is printed), poll.
func (p *Platform) EnrollLocalMachine(ctx context.Context, configDir string) (*config.Credentials, error) {
	cs := config.NewStore(configDir)
	if c, err := p.reuse(ctx, cs); err != nil || c != nil {
		return c, err
	}
	id, err := cs.Identity()
	if err != nil {
		return nil, err
	}
	machine, _ := os.Hostname()
	if machine == "" {
		machine = "this computer"
	}
	client := &agentenroll.Client{BaseURL: p.apiURL, UserAgent: "opengeni-relay-dev", Logger: p.opts.Logger,
		// Approval happens before the first poll: no need to wait 5 s.
		Sleep: func(ctx context.Context, d time.Duration) error {
			return backoff.SleepCtx(ctx, min(d, 100*time.Millisecond))
		}}
	start, err := client.Start(ctx, agentenroll.StartRequest{
		WorkspaceID: p.ws, PublicKey: id.PublicKey(), OS: agentenroll.HostOS(), Arch: agentenroll.HostArch(), MachineName: machine,
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: device flow start: %w", err)
	}
	fmt.Fprintf(p.out, "  pairing this machine: user code %s (approved automatically in dev mode)\n", start.UserCode)
	var approved enroll.ApproveResponse
	if err := p.AdminDo(ctx, http.MethodPost, approvePath(p.ws),
		map[string]any{"userCode": start.UserCode, "allowScreenControl": false}, &approved); err != nil {
		return nil, fmt.Errorf("devstack: approve: %w", err)
	}
	wire, err := client.Poll(ctx, start)
	if err != nil {
		return nil, fmt.Errorf("devstack: device flow poll: %w", err)
	}
	creds := wire.Config(p.apiURL, "")
	if err := p.replace(cs, creds); err != nil {
		return nil, err
	}
	p.log.Info("local machine paired", "agent", creds.AgentID, "workspace", creds.WorkspaceID, "config", configDir)
	return creds, p.writeCtl(creds.AgentID)
}

// reuse returns stored credentials for the local workspace when they still
// work here, refreshed to this run's addresses; nil when a pairing is due.
func (p *Platform) reuse(ctx context.Context, cs *config.Store) (*config.Credentials, error) {
	conns, err := cs.List()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for _, conn := range conns {
		c := conn.Creds
		if c == nil || c.WorkspaceID != p.ws {
			continue
		}
		claims, err := enroll.VerifyBearer(p.state.SigningSecret, c.NATSBearer, now)
		if err != nil || claims.AgentID != c.AgentID || time.Unix(claims.Exp, 0).Sub(now) < minBearerLife {
			continue
		}
		e, err := p.store.GetEnrollment(ctx, p.ws, c.AgentID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && (!e.Active() || e.Generation() != claims.Generation())) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fresh := *c
		fresh.NATSURLs = []string{p.NATSURL()}
		fresh.APIURL, _ = config.NormalizeAPIURL(p.apiURL)
		fresh.RelayURL, fresh.RelayToken = enroll.RelayDialURL(p.currentRelayURL()), ""
		if fresh.RelayURL != "" {
			if fresh.RelayToken, err = token.MintAgent(p.state.RelayTokenSecret, token.AgentClaims{WorkspaceID: p.ws, AgentID: c.AgentID,
				Exp: now.Add(enroll.RelayTokenTTL).Unix()}, now); err != nil {
				return nil, err
			}
		}
		if conn.ID != fresh.ID() {
			if err := cs.Remove(conn.ID); err != nil {
				return nil, err
			}
		}
		if _, err := cs.Save(&fresh); err != nil {
			return nil, fmt.Errorf("devstack: save credentials: %w", err)
		}
		p.log.Info("local machine already paired; reusing its credentials", "agent", c.AgentID, "workspace", p.ws)
		return &fresh, p.writeCtl(c.AgentID)
	}
	return nil, nil
}

// replace saves creds, dropping other connections to the local workspace
// (an earlier run's API port).
func (p *Platform) replace(cs *config.Store, creds *config.Credentials) error {
	conns, err := cs.List()
	if err != nil {
		return err
	}
	for _, c := range conns {
		if c.Creds != nil && c.Creds.WorkspaceID == p.ws && c.ID != creds.ID() {
			if err := cs.Remove(c.ID); err != nil {
				return err
			}
		}
	}
	if _, err := cs.Save(creds); err != nil {
		return fmt.Errorf("devstack: save credentials: %w", err)
	}
	return nil
}

func (p *Platform) writeCtl(agentID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, err := json.MarshalIndent(CtlFile{NATSURL: p.NATSURL(), User: ControlUser, Password: p.state.ControlPassword,
		WorkspaceID: p.ws, AgentID: agentID, APIURL: p.apiURL}, "", "  ")
	if err != nil {
		return err
	}
	return config.WriteFileAtomic(p.ctlFn, append(b, '\n'))
}

// platLoadState reads platform.json, creating it (every secret fresh) on
// first start and filling in anything an older file lacks; adminCreated
// says the admin token was made now.
func platLoadState(path string) (_ platformState, adminCreated bool, _ error) {
	var st platformState
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &st); err != nil {
			return st, false, fmt.Errorf("devstack: %s is unreadable (%v); delete the data directory to start over", path, err)
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return st, false, err
	}
	changed, adminCreated := false, st.AdminToken == ""
	fill := func(v *string, gen func() (string, error)) error {
		if *v != "" {
			return nil
		}
		s, err := gen()
		if err != nil {
			return err
		}
		*v, changed = s, true
		return nil
	}
	hexSecret := func(n int) func() (string, error) {
		return func() (string, error) {
			b := make([]byte, n)
			if _, err := rand.Read(b); err != nil {
				return "", err
			}
			return hex.EncodeToString(b), nil
		}
	}
	seed := func() (string, error) {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return "", err
		}
		s, err := kp.Seed()
		return string(s), err
	}
	for _, f := range []struct {
		v   *string
		gen func() (string, error)
	}{
		{&st.WorkspaceID, func() (string, error) { return uuid.NewString(), nil }},
		{&st.SigningSecret, hexSecret(32)},
		{&st.RelayTokenSecret, hexSecret(32)},
		{&st.StreamTokenSecret, hexSecret(32)},
		{&st.CalloutSeed, seed},
		{&st.ControlPassword, hexSecret(24)},
		{&st.CalloutPassword, hexSecret(24)},
		{&st.RelayNATSPassword, hexSecret(24)},
		{&st.AdminToken, func() (string, error) { s, err := hexSecret(24)(); return "ogadm_" + s, err }},
	} {
		if err := fill(f.v, f.gen); err != nil {
			return st, false, err
		}
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt, changed = time.Now().UTC(), true
	}
	if !changed {
		return st, false, nil
	}
	b, err = json.MarshalIndent(&st, "", "  ")
	if err != nil {
		return st, false, err
	}
	return st, adminCreated, config.WriteFileAtomic(path, append(b, '\n'))
}

// platPrivateDir creates dir 0700 and refuses one others can read.
func platPrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("devstack: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("devstack: %s is not private: %w", dir, err)
		}
	}
	return nil
}

func platPortFree(host string, port int, what, flag string) error {
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("devstack: %s port %d is busy (another `relay dev`? use %s): %w", what, port, flag, err)
	}
	return l.Close()
}
