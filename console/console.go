// Package console is the platform's web console (issue 17): sign-in with
// the admin token, the workspace's machines with liveness and a CPU/memory
// chart, and per machine a terminal, files, the desktop, git status and
// one-off commands; pairing (the device-flow page at /device, enrollments,
// enroll tokens).
//
// It is an http.Handler built on the control library and the store: every
// machine op goes through a control.Session (terminals and the desktop
// through the relay with viewer tokens minted here), every pairing op
// through the enrollment API's own handler, called in-process with the admin
// token, so its rules (validation, rate limits, single-use codes) stay in
// one place. The browser never sees a token: it holds an HttpOnly,
// SameSite=Strict session cookie and sends a CSRF token on every
// state-changing request. The front end (console/web, plain JS and xterm.js)
// is embedded; pages load nothing from elsewhere and run no inline script.
package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/store"
)

// Config configures [New].
type Config struct {
	// WorkspaceID is the workspace the console shows.
	WorkspaceID string
	// AdminToken is what signs a person in (the dev platform's admin token);
	// it is also the bearer of the in-process enrollment API calls.
	AdminToken string
	// Store is the control-plane store (machines, series, enrollments).
	Store *store.Store
	// Enrollment is the enrollment API's handler (control/enroll.API).
	Enrollment http.Handler
	// RPC reaches the machines (control.NewNATSRPC over the control user).
	RPC control.RPC
	// Relay is where terminals and the desktop are viewed, and StreamSecret
	// the relay's viewer (ogs_) secret.
	Relay        control.RelayConfig
	StreamSecret []byte
	// APIURL is the enrollment API's base URL as machines reach it (the
	// install command); "" uses the request's origin.
	APIURL string
	// SessionTTL bounds a sign-in; default 12 h.
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Console is the web console handler.
type Console struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	sessions *sessions
	terms    *terminals
	desk     *desktops
	pings    *pingCache

	closeOnce sync.Once
	ctx       context.Context // ends with Close: background viewers
	cancel    context.CancelFunc
}

// New builds the console.
func New(cfg Config) (*Console, error) {
	switch {
	case cfg.WorkspaceID == "":
		return nil, errors.New("console: WorkspaceID is required")
	case cfg.AdminToken == "":
		return nil, errors.New("console: AdminToken is required")
	case cfg.Store == nil || cfg.Enrollment == nil || cfg.RPC == nil:
		return nil, errors.New("console: Store, Enrollment and RPC are required")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Console{cfg: cfg, log: cfg.Logger.With("component", "console"), mux: http.NewServeMux(),
		sessions: newSessions(cfg.SessionTTL), pings: newPingCache(), ctx: ctx, cancel: cancel}
	c.terms = newTerminals(c)
	c.desk = newDesktops(c)
	c.routes()
	return c, nil
}

// Close ends the console's terminals and desktop viewers.
func (c *Console) Close() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.terms.closeAll()
		c.desk.closeAll()
	})
}

func (c *Console) routes() {
	m := c.mux
	for _, p := range []string{"GET /{$}", "GET /device", "GET /pairing", "GET /machines/{id}"} {
		m.HandleFunc(p, c.servePage)
	}
	m.Handle("GET /assets/", assetHandler())
	m.HandleFunc("GET /api/session", c.handleSession)
	m.HandleFunc("POST /api/login", c.handleLogin)
	m.HandleFunc("POST /api/logout", c.authed(c.handleLogout))

	m.HandleFunc("GET /api/machines", c.authed(c.handleMachines))
	m.HandleFunc("GET /api/machines/{id}", c.authed(c.handleMachine))
	m.HandleFunc("GET /api/machines/{id}/files", c.authed(c.handleList))
	m.HandleFunc("GET /api/machines/{id}/files/download", c.authed(c.handleDownload))
	m.HandleFunc("POST /api/machines/{id}/files/upload", c.authed(c.handleUpload))
	m.HandleFunc("POST /api/machines/{id}/files/mkdir", c.authed(c.handleMkdir))
	m.HandleFunc("POST /api/machines/{id}/files/rename", c.authed(c.handleRename))
	m.HandleFunc("POST /api/machines/{id}/files/delete", c.authed(c.handleDelete))
	m.HandleFunc("POST /api/machines/{id}/git/status", c.authed(c.handleGitStatus))
	m.HandleFunc("POST /api/machines/{id}/exec", c.authed(c.handleExec))

	m.HandleFunc("POST /api/machines/{id}/terminals", c.authed(c.handleTermOpen))
	m.HandleFunc("GET /api/machines/{id}/terminals/{tid}/output", c.authed(c.handleTermOutput))
	m.HandleFunc("POST /api/machines/{id}/terminals/{tid}/input", c.authed(c.handleTermInput))
	m.HandleFunc("POST /api/machines/{id}/terminals/{tid}/resize", c.authed(c.handleTermResize))
	m.HandleFunc("POST /api/machines/{id}/terminals/{tid}/close", c.authed(c.handleTermClose))

	m.HandleFunc("POST /api/machines/{id}/desktop/start", c.authed(c.handleDesktopStart))
	m.HandleFunc("GET /api/machines/{id}/desktop/frames", c.authed(c.handleDesktopFrames))
	m.HandleFunc("POST /api/machines/{id}/desktop/input", c.authed(c.handleDesktopInput))
	m.HandleFunc("GET /api/machines/{id}/desktop/screenshot", c.authed(c.handleScreenshot))

	m.HandleFunc("POST /api/pairing/lookup", c.authed(c.handlePairingLookup))
	m.HandleFunc("POST /api/pairing/approve", c.authed(c.handlePairingApprove))
	m.HandleFunc("POST /api/pairing/deny", c.authed(c.handlePairingDeny))
	m.HandleFunc("GET /api/enrollments", c.authed(c.handleEnrollments))
	m.HandleFunc("POST /api/enrollments/{eid}/revoke", c.authed(c.handleRevoke))
	m.HandleFunc("POST /api/enroll-tokens", c.authed(c.handleMintToken))
}

// ServeHTTP serves the console with its security headers on every answer.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if strings.HasPrefix(r.URL.Path, "/api/") {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// csp: scripts and everything else only from this origin, no inline script,
// no eval. Styles allow 'unsafe-inline' because xterm.js inserts <style>
// elements for its renderer; frames are data: PNGs.
const csp = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// apiError is a JSON error answer.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"` // the agent's ErrorCode name, when it answered
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...)})
}

// failOp answers an op's error: the control error's code and message, with
// the HTTP status that fits it.
func (c *Console) failOp(w http.ResponseWriter, r *http.Request, err error) {
	var ce *control.Error
	if !errors.As(err, &ce) {
		if errors.Is(err, store.ErrNotFound) {
			fail(w, http.StatusNotFound, "no such machine")
			return
		}
		if errors.Is(err, errBadRequest) {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		c.log.Warn("console op failed", "path", r.URL.Path, "err", err)
		fail(w, http.StatusBadGateway, "%v", err)
		return
	}
	status := http.StatusBadGateway
	switch {
	case ce.AgentOffline:
		status = http.StatusServiceUnavailable
	case ce.OSNotFound:
		status = http.StatusNotFound
	case ce.Reason == control.ReasonConsentRequired:
		status = http.StatusForbidden
	case ce.PayloadTooLarge:
		status = http.StatusRequestEntityTooLarge
	}
	writeJSON(w, status, apiError{Error: ce.Message, Code: strings.TrimPrefix(ce.Code.String(), "ERROR_CODE_")})
}

var errBadRequest = errors.New("bad request")

// readJSON decodes a small JSON body into dst.
func readJSON(r *http.Request, dst any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("%w: body: %v", errBadRequest, err)
	}
	return nil
}

// session is a control session to one machine of the workspace; id is
// checked against the enrollments (an unknown machine is 404, not an
// AGENT_OFFLINE after a timeout).
func (c *Console) session(ctx context.Context, id string) (*control.Session, error) {
	if _, err := c.cfg.Store.GetEnrollment(ctx, c.cfg.WorkspaceID, id); err != nil {
		return nil, err
	}
	return control.NewSession(control.SessionConfig{WorkspaceID: c.cfg.WorkspaceID, AgentID: id, RPC: c.cfg.RPC,
		Relay: c.cfg.Relay, Instances: c.cfg.Store})
}

// withSession runs f with the path's machine session, answering errors.
func (c *Console) withSession(w http.ResponseWriter, r *http.Request, f func(s *control.Session) error) {
	s, err := c.session(r.Context(), r.PathValue("id"))
	if err == nil {
		err = f(s)
	}
	if err != nil {
		c.failOp(w, r, err)
	}
}
