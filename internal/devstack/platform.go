package devstack

// The dev platform (control.md §6, issue 6 part 5): the platform package on
// an embedded nats-server, with its state in a private data directory and
// the local machine paired through the real device flow.
//
// State under the data directory (0700; every file 0600):
//
//	platform.json   workspace id, the platform's secrets (platform.Secrets)
//	admin.token     the enrollment API's admin bearer (for curl)
//	ctl.json        what `relay ctl` needs: NATS URL, control user, workspace, agent
//	jetstream/      the JetStream store (enrollments, devices, machines buckets)

import (
	"context"
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/platform"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// Platform defaults and file names.
const (
	// DefaultAPIPort is the enrollment API's loopback port.
	DefaultAPIPort = platform.DefaultAPIPort
	// EnvDevData overrides the platform's data directory.
	EnvDevData = "OPENGENI_DEV_DATA"

	PlatformStateFile = "platform.json"
	AdminTokenFile    = "admin.token"
	CtlFileName       = "ctl.json"
	JetStreamDir      = "jetstream"
)

// APIError is a non-2xx answer of the enrollment API.
type APIError = platform.APIError

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
	WorkspaceID string `json:"workspaceId"`
	platform.Secrets
	CreatedAt time.Time `json:"createdAt"`
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

// Platform is a running dev platform: the [platform.Platform] on an
// embedded server, with its data directory and the local workspace.
type Platform struct {
	*platform.Platform
	opts    PlatformOptions
	log     *slog.Logger
	out     io.Writer
	dataDir string
	state   platformState
	ws      string

	mu    sync.Mutex // ctl.json writes
	ctlFn string
	// ui is the web console once mounted (SetUI); until then /device is the
	// page that explains how to approve, and the console's paths are 404s.
	ui atomic.Pointer[http.Handler]
}

// consolePaths are the top-level paths the web console serves (package
// console's routes) beside the enrollment API's /v1/.
var consolePaths = []string{"/{$}", "/pairing", "/machines/", "/assets/", "/api/"}

// uiHandlers mount the console's paths and the verification URI the API
// hands out (origin + /device) on the API's origin, served by the console
// once SetUI mounted it.
func (p *Platform) uiHandlers() map[string]http.Handler {
	serve := func(fallback http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ui := p.ui.Load(); ui != nil {
				(*ui).ServeHTTP(w, r)
				return
			}
			fallback(w, r)
		})
	}
	hs := map[string]http.Handler{"/device": serve(p.serveDevicePage)}
	for _, path := range consolePaths {
		hs[path] = serve(http.NotFound)
	}
	return hs
}

// SetUI serves h (the web console) on the enrollment API's origin.
func (p *Platform) SetUI(h http.Handler) { p.ui.Store(&h) }

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
		ctlFn: filepath.Join(opts.DataDir, CtlFileName)}
	if err := privateDir(p.dataDir); err != nil {
		return nil, err
	}
	var adminCreated bool
	if p.state, adminCreated, err = loadState(filepath.Join(p.dataDir, PlatformStateFile)); err != nil {
		return nil, err
	}
	p.ws = p.state.WorkspaceID
	if opts.WorkspaceID != "" {
		p.ws = opts.WorkspaceID
	}
	if err := config.WriteFileAtomic(p.AdminTokenFile(), []byte(p.state.AdminToken+"\n")); err != nil {
		return nil, err
	}
	apiPort := max(opts.HTTPPort, 0)
	for _, c := range []struct {
		port       int
		what, flag string
	}{{opts.NATSPort, "NATS", "-nats-port"}, {apiPort, "enrollment API", "-api-port"}} {
		if err := portFree(opts.Host, c.port, c.what, c.flag); err != nil {
			return nil, err
		}
	}
	p.Platform, err = platform.Start(ctx, platform.Options{
		Secrets: p.state.Secrets,
		Embedded: platform.EmbeddedNATS{Host: opts.Host, Port: opts.NATSPort, StoreDir: filepath.Join(p.dataDir, JetStreamDir),
			ServerName: "opengeni-dev"},
		APIAddr: net.JoinHostPort(opts.Host, strconv.Itoa(apiPort)), RelayURL: opts.RelayURL, TrustedProxies: opts.TrustedProxies,
		Handlers: p.uiHandlers(),
		Logger:   opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
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
	p.log.Info("dev platform up", "nats", p.NATSURL(), "api", p.APIURL(), "workspace", p.ws, "data", p.dataDir)
	return p, nil
}

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

// RelayTokenSecret signs the agents' ogr_ relay tokens: configure the relay
// with it (relay.Options.RelayTokenSecret) so tokens survive restarts.
func (p *Platform) RelayTokenSecret() string { return p.state.RelayTokenSecret }

// SigningSecret signs the platform's oge_ bearers and oget_ enroll tokens
// (a load generator mints bearers the way the enrollment API does).
func (p *Platform) SigningSecret() string { return p.state.SigningSecret }

// StreamTokenSecret is the persisted viewer (ogs_) secret for the relay.
func (p *Platform) StreamTokenSecret() string { return p.state.StreamTokenSecret }

// RevokeEnrollment revokes an enrollment of the local workspace through the
// API; the callout then disconnects its live connections.
func (p *Platform) RevokeEnrollment(ctx context.Context, agentID string) (bool, error) {
	var r struct {
		Revoked bool `json:"revoked"`
	}
	err := p.Admin().Do(ctx, http.MethodPost, platform.RevokePath(p.ws, agentID), nil, &r)
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
	client := &agentenroll.Client{BaseURL: p.APIURL(), UserAgent: "opengeni-relay-dev", Logger: p.opts.Logger,
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
	if err := p.Admin().Do(ctx, http.MethodPost, platform.ApprovePath(p.ws),
		map[string]any{"userCode": start.UserCode, "allowScreenControl": false}, &approved); err != nil {
		return nil, fmt.Errorf("devstack: approve: %w", err)
	}
	wire, err := client.Poll(ctx, start)
	if err != nil {
		return nil, fmt.Errorf("devstack: device flow poll: %w", err)
	}
	creds := agentenroll.StoredCredentials(wire, p.APIURL(), "")
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
		e, err := p.Store().GetEnrollment(ctx, p.ws, c.AgentID)
		if errors.Is(err, store.ErrNotFound) || (err == nil && (!e.Active() || e.Generation() != claims.Generation())) {
			continue
		}
		if err != nil {
			return nil, err
		}
		fresh := *c
		fresh.NATSURLs = p.AgentNATSURLs()
		fresh.APIURL, _ = config.NormalizeAPIURL(p.APIURL())
		fresh.RelayURL, fresh.RelayToken = enroll.RelayDialURL(p.RelayURL()), ""
		if fresh.RelayURL != "" {
			if fresh.RelayToken, err = token.MintAgent(p.state.RelayTokenSecret, token.AgentClaims{WorkspaceID: p.ws, AgentID: c.AgentID,
				Exp: now.Add(enroll.RelayTokenTTL).Unix(), CredentialGeneration: e.Generation()}, now); err != nil {
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
	b, err := json.MarshalIndent(CtlFile{NATSURL: p.NATSURL(), User: platform.ControlUser, Password: p.state.ControlPassword,
		WorkspaceID: p.ws, AgentID: agentID, APIURL: p.APIURL()}, "", "  ")
	if err != nil {
		return err
	}
	return config.WriteFileAtomic(p.ctlFn, append(b, '\n'))
}

// loadState reads platform.json, creating it (every secret fresh) on first
// start and filling in anything an older file lacks; adminCreated says the
// admin token was made now.
func loadState(path string) (_ platformState, adminCreated bool, _ error) {
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
	adminCreated = st.AdminToken == ""
	made, err := st.Fill()
	if err != nil {
		return st, false, err
	}
	changed := len(made) > 0
	if st.WorkspaceID == "" {
		st.WorkspaceID, changed = uuid.NewString(), true
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

// privateDir creates dir 0700 and refuses one others can read.
func privateDir(dir string) error {
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

// portFree says which flag to change when a fixed port is taken (-1 or 0:
// any free port).
func portFree(host string, port int, what, flag string) error {
	if port <= 0 {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("devstack: %s port %d is busy (another `relay dev`? use %s): %w", what, port, flag, err)
	}
	return l.Close()
}

// AdminDo sends one admin request to the enrollment API (see
// [platform.AdminClient.Do]).
func (p *Platform) AdminDo(ctx context.Context, method, path string, body, out any) error {
	return p.Admin().Do(ctx, method, path, body, out)
}
