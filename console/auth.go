package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// SessionCookie is the console's session cookie (HttpOnly, SameSite=Strict).
const SessionCookie = "ogc_session"

// CSRFHeader carries the session's CSRF token on every state-changing
// request.
const CSRFHeader = "X-CSRF-Token"

// signedIn is one sign-in.
type signedIn struct {
	csrf    string
	expires time.Time
}

// sessions are the live sign-ins, in memory: a restart signs everyone out.
type sessions struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]signedIn
}

func newSessions(ttl time.Duration) *sessions { return &sessions{ttl: ttl, m: map[string]signedIn{}} }

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) create() (id string, si signedIn) {
	id, si = randomToken(), signedIn{csrf: randomToken(), expires: time.Now().Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, v := range s.m { // drop expired sign-ins as new ones come
		if now.After(v.expires) {
			delete(s.m, k)
		}
	}
	s.m[id] = si
	return id, si
}

func (s *sessions) get(id string) (signedIn, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	si, ok := s.m[id]
	if ok && time.Now().After(si.expires) {
		delete(s.m, id)
		return signedIn{}, false
	}
	return si, ok
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// current is the request's sign-in.
func (c *Console) current(r *http.Request) (string, signedIn, bool) {
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return "", signedIn{}, false
	}
	si, ok := c.sessions.get(ck.Value)
	return ck.Value, si, ok
}

// safeMethod: requests that change nothing.
func safeMethod(m string) bool { return m == http.MethodGet || m == http.MethodHead }

// sameOrigin refuses a state-changing request that a browser marked as
// coming from another origin (Origin, else Sec-Fetch-Site); a request
// without either (curl, the tests' plain client) still needs the CSRF token.
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		return err == nil && u.Host == r.Host
	}
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		return s == "same-origin" || s == "none"
	}
	return true
}

// authed wraps an API handler: a live sign-in is required (401), and a
// state-changing request must come from this origin with the session's
// CSRF token (403).
func (c *Console) authed(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, si, ok := c.current(r)
		if !ok {
			fail(w, http.StatusUnauthorized, "sign in first")
			return
		}
		if !safeMethod(r.Method) {
			if !sameOrigin(r) {
				fail(w, http.StatusForbidden, "cross-origin request refused")
				return
			}
			if tok := r.Header.Get(CSRFHeader); tok == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(si.csrf)) != 1 {
				fail(w, http.StatusForbidden, "missing or wrong CSRF token")
				return
			}
		}
		h(w, r)
	}
}

// sessionInfo is GET /api/session.
type sessionInfo struct {
	SignedIn    bool   `json:"signedIn"`
	CSRF        string `json:"csrf,omitempty"`
	WorkspaceID string `json:"workspaceId,omitempty"`
}

func (c *Console) handleSession(w http.ResponseWriter, r *http.Request) {
	_, si, ok := c.current(r)
	if !ok {
		writeJSON(w, http.StatusOK, sessionInfo{})
		return
	}
	writeJSON(w, http.StatusOK, sessionInfo{SignedIn: true, CSRF: si.csrf, WorkspaceID: c.cfg.WorkspaceID})
}

// handleLogin signs in with the admin token. There is no session yet, so no
// CSRF token: the origin check and the JSON body (a cross-origin form cannot
// send application/json without a preflight) keep other sites out.
func (c *Console) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		fail(w, http.StatusForbidden, "cross-origin request refused")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		fail(w, http.StatusUnsupportedMediaType, "send JSON")
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := readJSON(r, &body); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if subtle.ConstantTimeCompare([]byte(body.Token), []byte(c.cfg.AdminToken)) != 1 {
		c.log.Info("console sign-in refused", "remote", r.RemoteAddr)
		fail(w, http.StatusUnauthorized, "wrong admin token")
		return
	}
	id, si := c.sessions.create()
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, Expires: si.expires})
	c.log.Info("console sign-in", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, sessionInfo{SignedIn: true, CSRF: si.csrf, WorkspaceID: c.cfg.WorkspaceID})
}

func (c *Console) handleLogout(w http.ResponseWriter, r *http.Request) {
	if id, _, ok := c.current(r); ok {
		c.sessions.remove(id)
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	writeJSON(w, http.StatusOK, sessionInfo{})
}
