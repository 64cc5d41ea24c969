package console_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opengeni/opengeni-agent/console"
)

// client is a plain HTTP client (a cookie jar, no browser).
func client(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar}
}

func request(t *testing.T, c *http.Client, method, path string, body any, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, env.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// login signs a plain client in and returns its CSRF token.
func login(t *testing.T, c *http.Client) string {
	t.Helper()
	resp, b := request(t, c, http.MethodPost, "/api/login", map[string]string{"token": env.stack.Platform().AdminToken()}, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %d %s", resp.StatusCode, b)
	}
	var s struct{ CSRF string }
	if err := json.Unmarshal(b, &s); err != nil || s.CSRF == "" {
		t.Fatalf("login answer %s: %v", b, err)
	}
	return s.CSRF
}

func TestAPIRefusesRequestsWithoutASession(t *testing.T) {
	id := env.stack.AgentID()
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/api/machines"},
		{http.MethodGet, "/api/machines/" + id},
		{http.MethodGet, "/api/machines/" + id + "/files?path="},
		{http.MethodGet, "/api/machines/" + id + "/files/download?path=go.mod"},
		{http.MethodPost, "/api/machines/" + id + "/exec"},
		{http.MethodPost, "/api/machines/" + id + "/terminals"},
		{http.MethodPost, "/api/machines/" + id + "/desktop/input"},
		{http.MethodPost, "/api/pairing/approve"},
		{http.MethodGet, "/api/enrollments"},
		{http.MethodPost, "/api/enroll-tokens"},
	} {
		resp, b := request(t, client(t), tc.method, tc.path, map[string]string{}, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without a session: %d %s, want 401", tc.method, tc.path, resp.StatusCode, b)
		}
	}
	// A made-up session cookie is no session.
	c := client(t)
	req, _ := http.NewRequest(http.MethodGet, env.base+"/api/machines", nil)
	req.AddCookie(&http.Cookie{Name: console.SessionCookie, Value: "forged"})
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged cookie: %d", resp.StatusCode)
	}
}

func TestStateChangesNeedTheCSRFTokenFromThisOrigin(t *testing.T) {
	c := client(t)
	csrf := login(t, c)
	marker := filepath.Join(env.root, "csrf-marker")
	exec := func(header map[string]string) int {
		resp, _ := request(t, c, http.MethodPost, "/api/machines/"+env.stack.AgentID()+"/exec",
			map[string]string{"command": "touch csrf-marker"}, header)
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name   string
		header map[string]string
	}{
		{"no token", nil},
		{"wrong token", map[string]string{console.CSRFHeader: "wrong"}},
		{"another session's token", map[string]string{console.CSRFHeader: login(t, client(t))}},
		{"right token, other origin", map[string]string{console.CSRFHeader: csrf, "Origin": "http://evil.example"}},
		{"right token, cross-site fetch", map[string]string{console.CSRFHeader: csrf, "Sec-Fetch-Site": "cross-site"}},
	} {
		if code := exec(tc.header); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, code)
		}
	}
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("a refused request ran its command: %v", err)
	}
	if code := exec(map[string]string{console.CSRFHeader: csrf, "Origin": env.base}); code != http.StatusOK {
		t.Fatalf("with the token: %d", code)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the accepted request did not run: %v", err)
	}

	// Sign-out ends the session.
	if resp, _ := request(t, c, http.MethodPost, "/api/logout", nil, map[string]string{console.CSRFHeader: csrf}); resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := request(t, c, http.MethodGet, "/api/machines", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestSignInCookieAndHeaders(t *testing.T) {
	c := client(t)
	if resp, _ := request(t, c, http.MethodPost, "/api/login", map[string]string{"token": "ogadm_nope"}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", resp.StatusCode)
	}
	if resp, _ := request(t, c, http.MethodPost, "/api/login", map[string]string{"token": env.stack.Platform().AdminToken()},
		map[string]string{"Origin": "http://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin sign-in: %d", resp.StatusCode)
	}
	resp, _ := request(t, c, http.MethodPost, "/api/login", map[string]string{"token": env.stack.Platform().AdminToken()}, nil)
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == console.SessionCookie {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", ck)
	}

	for _, p := range []string{"/", "/device", "/device?code=ABCD-EFGH", "/pairing", "/machines/x", "/api/session"} {
		resp, body := request(t, client(t), http.MethodGet, p, nil, nil)
		csp := resp.Header.Get("Content-Security-Policy")
		script := regexp.MustCompile(`script-src ([^;]*)`).FindStringSubmatch(csp)
		if resp.StatusCode != http.StatusOK || script == nil || script[1] != "'self'" || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: %d, CSP %q", p, resp.StatusCode, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", p)
		}
		if strings.HasPrefix(p, "/api/") {
			continue
		}
		// No inline script: every <script> has a src.
		for _, tag := range regexp.MustCompile(`(?i)<script[^>]*>`).FindAllString(string(body), -1) {
			if !strings.Contains(tag, "src=") {
				t.Errorf("%s: inline script %s", p, tag)
			}
		}
	}
}
