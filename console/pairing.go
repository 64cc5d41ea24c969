package console

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opengeni/opengeni-agent/control/enroll"
)

// Pairing goes through the enrollment API's own handler, in process, with
// the admin token: its validation, per-IP limits (keyed on the browser's
// address) and single-use codes apply unchanged, and its JSON answers
// (errors included) pass through to the browser.

// capture is a ResponseWriter that keeps the answer.
type capture struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (c *capture) Header() http.Header         { return c.h }
func (c *capture) Write(b []byte) (int, error) { return c.body.Write(b) }
func (c *capture) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
}

// enrollCall sends one request to the enrollment API and returns its
// status and JSON body.
func (c *Console) enrollCall(r *http.Request, method, path string, body []byte) (int, []byte) {
	req, err := http.NewRequestWithContext(r.Context(), method, path, bytes.NewReader(body))
	if err != nil {
		return http.StatusInternalServerError, nil
	}
	req.RemoteAddr, req.Host = r.RemoteAddr, r.Host
	req.Header.Set("Authorization", "Bearer "+c.cfg.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	if xff := r.Header.Get("X-Forwarded-For"); xff != "" { // the API decides whom it trusts
		req.Header.Set("X-Forwarded-For", xff)
	}
	w := &capture{h: http.Header{}}
	c.cfg.Enrollment.ServeHTTP(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.status, w.body.Bytes()
}

// relay forwards the browser's JSON body (or none) to the API and its
// answer back.
func (c *Console) relayEnroll(w http.ResponseWriter, r *http.Request, method, path string) {
	var body []byte
	if method != http.MethodGet {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
		if err != nil {
			fail(w, http.StatusBadRequest, "body: %v", err)
			return
		}
		body = b
	}
	status, out := c.enrollCall(r, method, path, body)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(out)
}

func (c *Console) wsPath(rest string) string {
	return "/v1/workspaces/" + url.PathEscape(c.cfg.WorkspaceID) + "/enrollments" + rest
}

func (c *Console) handlePairingLookup(w http.ResponseWriter, r *http.Request) {
	c.relayEnroll(w, r, http.MethodPost, "/v1/enrollments/device/lookup")
}

func (c *Console) handlePairingApprove(w http.ResponseWriter, r *http.Request) {
	c.relayEnroll(w, r, http.MethodPost, c.wsPath("/device/approve"))
}

func (c *Console) handlePairingDeny(w http.ResponseWriter, r *http.Request) {
	c.relayEnroll(w, r, http.MethodPost, c.wsPath("/device/deny"))
}

func (c *Console) handleEnrollments(w http.ResponseWriter, r *http.Request) {
	c.relayEnroll(w, r, http.MethodGet, c.wsPath(""))
}

func (c *Console) handleRevoke(w http.ResponseWriter, r *http.Request) {
	c.relayEnroll(w, r, http.MethodPost, c.wsPath("/"+url.PathEscape(r.PathValue("eid"))+"/revoke"))
}

// mintAnswer is the enroll-token answer with the command that uses it.
type mintAnswer struct {
	Token            string `json:"token"`
	ExpiresAt        string `json:"expiresAt"`
	ExpiresInSeconds int    `json:"expiresInSeconds"`
	Command          string `json:"command"`
}

// handleMintToken mints a one-time enroll token and the install command
// that pairs a machine with it.
func (c *Console) handleMintToken(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		fail(w, http.StatusBadRequest, "body: %v", err)
		return
	}
	status, out := c.enrollCall(r, http.MethodPost, c.wsPath("/token"), body)
	var ans mintAnswer
	if status != http.StatusCreated || json.Unmarshal(out, &ans) != nil {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write(out)
		return
	}
	ans.Command = InstallCommand(c.apiURL(r), ans.Token)
	writeJSON(w, http.StatusCreated, ans)
}

// apiURL is the enrollment API as machines reach it.
func (c *Console) apiURL(r *http.Request) string {
	if c.cfg.APIURL != "" {
		return strings.TrimRight(c.cfg.APIURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// InstallCommand pairs an installed agent with an enroll token (the token
// in the environment, not in argv) and starts serving.
func InstallCommand(apiURL, token string) string {
	return "OPENGENI_ENROLL_TOKEN=" + shellQuote(token) + " opengeni-agent enroll --api-url " + shellQuote(apiURL) +
		" && opengeni-agent run"
}

// shellQuote single-quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Compile-time check: the API the console forwards to is the enrollment API.
var _ http.Handler = (*enroll.API)(nil)
