// Package enroll is the platform's enrollment (pairing) HTTP API of
// control.md §6.2–6.3: the device flow (start, poll, lookup, approve, deny),
// zero-click enroll tokens (mint, exchange), and listing and revoking
// enrollments. State lives in [store.Store]; users are identified by a
// pluggable [Authorizer].
//
// Routes (all under /v1; JSON bodies with camelCase keys):
//
//	POST /v1/enrollments/device/start                       agent   201 device + user codes
//	POST /v1/enrollments/device/poll                        agent   200 {state, credentials?}
//	POST /v1/enrollments/device/lookup                      user    200 the pending request (404 otherwise)
//	POST /v1/enrollments/token/exchange                     agent   201 {credentials}
//	POST /v1/workspaces/{ws}/enrollments/device/approve     manage  201
//	POST /v1/workspaces/{ws}/enrollments/device/deny        manage  200 {denied}
//	POST /v1/workspaces/{ws}/enrollments/token              manage  201 {token, expiresAt, expiresInSeconds}
//	GET  /v1/workspaces/{ws}/enrollments[?status=active]    read    200 {enrollments}
//	POST /v1/workspaces/{ws}/enrollments/{id}/revoke        manage  200 {revoked}
package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/enrollwire"
	"github.com/opengeni/opengeni-agent/internal/iplimit"
	"github.com/opengeni/opengeni-agent/internal/natsurl"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// WorkspaceLookup resolves a workspace id to its account; ok false means no
// such workspace (device start answers 404).
type WorkspaceLookup func(ctx context.Context, workspaceID string) (accountID string, ok bool, err error)

// Config configures the API. Store and Authorizer are required.
type Config struct {
	Store      *store.Store
	Authorizer Authorizer
	// Enabled is OPENGENI_SANDBOX_SELFHOSTED_ENABLED: off, every route
	// answers 404 ("invisible, not forbidden").
	Enabled bool
	// SigningSecret signs oge_ bearers and oget_ enroll tokens; "" disables
	// the credential plane (poll says "disabled", mint and exchange 503).
	SigningSecret string
	// RelayTokenSecret signs ogr_ relay tokens; "" hands out relayToken "".
	RelayTokenSecret string
	// NATSURL is handed to agents (natsUrls); a cluster's URLs are
	// comma-separated (one natsUrls entry each); "" hands out [].
	NATSURL string
	// RelayURL is the relay base; "" hands out relayUrl "".
	RelayURL string
	// UpdatePublicKey is handed to agents.
	UpdatePublicKey string
	// Workspaces resolves workspaces; nil accepts every workspace (with no
	// account).
	Workspaces WorkspaceLookup
	// PublicURL is the origin of verificationUri ("https://app.example");
	// "" uses the request's own origin.
	PublicURL string
	// RateLimits are the per-IP buckets; zero uses DefaultRateLimits.
	RateLimits RateLimits
	// TrustedProxies are the peers whose X-Forwarded-For / X-Real-IP name
	// the client; from any other peer the socket address keys the limits.
	TrustedProxies []netip.Prefix
	// ClientIP keys the rate limits; nil resolves the client from the
	// socket address and TrustedProxies.
	ClientIP func(*http.Request) string
	Now      func() time.Time
	Logger   *slog.Logger
}

// API serves the enrollment routes.
type API struct {
	cfg                           Config
	log                           *slog.Logger
	now                           func() time.Time
	start, poll, lookup, exchange *iplimit.Limiter
	mux                           *http.ServeMux
}

// New validates cfg and builds the API.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil || cfg.Authorizer == nil {
		return nil, errors.New("enroll: New: Store and Authorizer are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = iplimit.NewResolver(cfg.TrustedProxies).ClientIP
	}
	if cfg.RateLimits == (RateLimits{}) {
		cfg.RateLimits = DefaultRateLimits
	}
	a := &API{cfg: cfg, log: cfg.Logger.With("component", "enroll"), now: cfg.Now}
	a.start = iplimit.New(cfg.RateLimits.Start, cfg.Now)
	a.poll = iplimit.New(cfg.RateLimits.Poll, cfg.Now)
	a.lookup = iplimit.New(cfg.RateLimits.Lookup, cfg.Now)
	a.exchange = iplimit.New(cfg.RateLimits.Exchange, cfg.Now)

	m := http.NewServeMux()
	m.HandleFunc("POST "+enrollwire.PathDeviceStart, a.agentRoute(a.start, a.handleStart))
	m.HandleFunc("POST "+enrollwire.PathDevicePoll, a.agentRoute(a.poll, a.handlePoll))
	m.HandleFunc("POST /v1/enrollments/device/lookup", a.agentRoute(a.lookup, a.handleLookup))
	m.HandleFunc("POST "+enrollwire.PathTokenExchange, a.agentRoute(a.exchange, a.handleExchange))
	m.HandleFunc("POST /v1/workspaces/{ws}/enrollments/device/approve", a.userRoute(PermEnrollmentsManage, a.handleApprove))
	m.HandleFunc("POST /v1/workspaces/{ws}/enrollments/device/deny", a.userRoute(PermEnrollmentsManage, a.handleDeny))
	m.HandleFunc("POST /v1/workspaces/{ws}/enrollments/token", a.userRoute(PermEnrollmentsManage, a.handleMint))
	m.HandleFunc("GET /v1/workspaces/{ws}/enrollments", a.userRoute(PermEnrollmentsRead, a.handleList))
	m.HandleFunc("POST /v1/workspaces/{ws}/enrollments/{id}/revoke", a.userRoute(PermEnrollmentsManage, a.handleRevoke))
	a.mux = m
	return a, nil
}

// ServeHTTP serves the routes.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// maxBody bounds request bodies.
const maxBody = 64 << 10

// httpError is a handler failure with its status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func fail(status int, msg string) error { return &httpError{status, msg} }

var (
	errNotFound   = fail(http.StatusNotFound, "not found")
	errRateLimit  = fail(http.StatusTooManyRequests, "too many requests; slow down")
	errNoSecret   = fail(http.StatusServiceUnavailable, "enrollment credential plane is not configured")
	errBadEnroll  = fail(http.StatusUnauthorized, "invalid or expired enroll token")
	errNoPending  = fail(http.StatusNotFound, "no pending enrollment for that code")
	errUnauth     = fail(http.StatusUnauthorized, "authentication required")
	errForbidden  = fail(http.StatusForbidden, "forbidden")
	errBadRequest = fail(http.StatusBadRequest, "invalid JSON body")
)

type handler func(w http.ResponseWriter, r *http.Request, body []byte) (int, any, error)

// agentRoute: flag → per-IP bucket → read the body → handler.
func (a *API) agentRoute(l *iplimit.Limiter, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.cfg.Enabled {
			a.reply(w, r, 0, nil, errNotFound)
			return
		}
		if !l.Allow(a.cfg.ClientIP(r)) {
			w.Header().Set("Retry-After", strconv.Itoa(l.Bucket().RetryAfter()))
			a.reply(w, r, 0, nil, errRateLimit)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			a.reply(w, r, 0, nil, errBadRequest)
			return
		}
		status, v, err := h(w, r, body)
		a.reply(w, r, status, v, err)
	}
}

// userRoute: authenticate (401) and check the permission in {ws} (403)
// before the flag (404) and the body.
func (a *API) userRoute(perm string, h func(w http.ResponseWriter, r *http.Request, p *Principal, body []byte) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := a.cfg.Authorizer.Authenticate(r)
		if err != nil {
			if errors.Is(err, ErrUnauthenticated) {
				err = errUnauth
			}
			a.reply(w, r, 0, nil, err)
			return
		}
		perms, err := a.cfg.Authorizer.Permissions(r.Context(), p, r.PathValue("ws"))
		if err != nil {
			a.reply(w, r, 0, nil, err)
			return
		}
		if !Allows(perms, perm) {
			a.reply(w, r, 0, nil, errForbidden)
			return
		}
		if !a.cfg.Enabled {
			a.reply(w, r, 0, nil, errNotFound)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			a.reply(w, r, 0, nil, errBadRequest)
			return
		}
		status, v, err := h(w, r, p, body)
		a.reply(w, r, status, v, err)
	}
}

func (a *API) reply(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		var he *httpError
		if !errors.As(err, &he) {
			a.log.Error("enrollment route failed", "path", r.URL.Path, "err", err)
			he = &httpError{http.StatusInternalServerError, "internal error"}
		}
		status, v = he.status, map[string]string{"error": he.msg}
	}
	a.log.Debug("enroll", "method", r.Method, "path", r.URL.Path, "status", status)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode parses body into dst; an empty body is allowed only when
// emptyOK (then dst stays zero).
func decode(body []byte, dst any, emptyOK bool) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		if emptyOK {
			return nil
		}
		return errBadRequest
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return errBadRequest
	}
	return nil
}

func invalid(field, why string) error {
	return fail(http.StatusBadRequest, "invalid body: "+field+" "+why)
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// strLen checks an optional-or-required string's length in characters.
func strLen(field string, s *string, lo, hi int, required bool) error {
	if s == nil {
		if required {
			return invalid(field, "is required")
		}
		return nil
	}
	if n := utf8.RuneCountInString(*s); n < lo || n > hi {
		return invalid(field, fmt.Sprintf("must be %d..%d characters", lo, hi))
	}
	return nil
}

func enumOr(field string, s *string, def string, allowed ...string) (string, error) {
	if s == nil {
		return def, nil
	}
	for _, v := range allowed {
		if *s == v {
			return v, nil
		}
	}
	return "", invalid(field, "must be one of "+strings.Join(allowed, "|"))
}

// machineFields are the machine description shared by start and exchange.
type machineFields struct {
	PublicKey             *string `json:"publicKey"`
	OS                    *string `json:"os"`
	Arch                  *string `json:"arch"`
	MachineName           *string `json:"machineName"`
	Exposure              *string `json:"exposure"`
	CanOfferDisplay       *bool   `json:"canOfferDisplay"`
	RequestsScreenControl *bool   `json:"requestsScreenControl"`
}

type machine struct {
	pubkey, os, arch, exposure string
	name                       *string
	canOfferDisplay            bool
	requestsScreenControl      bool
}

func (f machineFields) validate() (machine, error) {
	var m machine
	if err := strLen("publicKey", f.PublicKey, 1, 1024, true); err != nil {
		return m, err
	}
	if err := strLen("machineName", f.MachineName, 1, 256, false); err != nil {
		return m, err
	}
	var err error
	if m.os, err = enumOr("os", f.OS, "linux", "linux", "macos", "windows"); err != nil {
		return m, err
	}
	if m.arch, err = enumOr("arch", f.Arch, "x86_64", "x86_64", "aarch64"); err != nil {
		return m, err
	}
	if m.exposure, err = enumOr("exposure", f.Exposure, control.ExposureWholeMachine, control.ExposureWholeMachine); err != nil {
		return m, err
	}
	m.pubkey, m.name = *f.PublicKey, f.MachineName
	m.canOfferDisplay = f.CanOfferDisplay != nil && *f.CanOfferDisplay
	m.requestsScreenControl = f.RequestsScreenControl != nil && *f.RequestsScreenControl
	return m, nil
}

// Credentials are what an authorized poll and an exchange return (the
// agent's credentials file; the agent reads the same type).
type Credentials = enrollwire.Credentials

// credentials mints a fresh credential set for an enrollment.
func (a *API) credentials(e store.Enrollment) (*Credentials, error) {
	now := a.now()
	bearer, claims, err := MintBearerGeneration(a.cfg.SigningSecret, e.WorkspaceID, e.ID, e.Generation(), now)
	if err != nil {
		return nil, err
	}
	c := &Credentials{
		AgentID: e.ID, WorkspaceID: e.WorkspaceID, Bearer: bearer, SubjectPrefix: claims.SubjectPrefix,
		NATSURLs: []string{}, RelayURL: RelayDialURL(a.cfg.RelayURL), NATSAccountCreds: bearer,
		UpdatePublicKey: a.cfg.UpdatePublicKey, ConsentedWholeMachine: true, ConsentedScreenControl: e.AllowScreenControl,
	}
	if urls := natsurl.Split(a.cfg.NATSURL); len(urls) > 0 {
		c.NATSURLs = urls
	}
	if c.RelayURL != "" && a.cfg.RelayTokenSecret != "" {
		c.RelayToken, err = token.MintAgent(a.cfg.RelayTokenSecret, token.AgentClaims{WorkspaceID: e.WorkspaceID, AgentID: e.ID,
			Exp: now.Add(RelayTokenTTL).Unix(), CredentialGeneration: e.Generation()}, now)
		if err != nil {
			return nil, err
		}
	}
	return c, nil
}

// RelayDialURL is the canonical relay dial base handed to agents:
// scheme://host[:port]<path, default /stream>, the default port omitted; ""
// when raw is "".
func RelayDialURL(raw string) string {
	if raw == "" {
		return ""
	}
	rc := control.ParseRelayURL(raw)
	scheme, def := "wss", 443
	if rc.TLS != nil && !*rc.TLS {
		scheme, def = "ws", 80
	}
	host := rc.Host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if rc.Port != def {
		host += ":" + strconv.Itoa(rc.Port)
	}
	return (&url.URL{Scheme: scheme, Host: host}).String() + rc.Path
}

// account resolves ws through Workspaces: its account ("" when no lookup is
// configured), or 404 for an unknown workspace.
func (a *API) account(r *http.Request, ws string) (string, error) {
	if a.cfg.Workspaces == nil {
		return "", nil
	}
	acc, ok, err := a.cfg.Workspaces(r.Context(), ws)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fail(http.StatusNotFound, "unknown workspace")
	}
	return acc, nil
}

// deref is *s, or "" for nil.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// origin is the verification origin: PublicURL, else the request's.
func (a *API) origin(r *http.Request) string {
	if a.cfg.PublicURL != "" {
		return strings.TrimRight(a.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
