package devstack

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/platform"
)

// Approve approves the device-flow request with userCode on the dev
// platform whose data directory is dataDir ("" = the default), with the
// admin token stored there: what `relay ctl approve` does.
func Approve(ctx context.Context, dataDir, userCode string, allowScreenControl bool) (*enroll.ApproveResponse, error) {
	if dataDir == "" {
		d, err := PlatformDataDir()
		if err != nil {
			return nil, err
		}
		dataDir = d
	}
	c, err := ReadCtlFile(dataDir)
	if err != nil {
		return nil, fmt.Errorf("devstack: no dev platform in %s (start `relay dev` or pass --data-dir): %w", dataDir, err)
	}
	tok, err := os.ReadFile(filepath.Join(dataDir, AdminTokenFile))
	if err != nil {
		return nil, fmt.Errorf("devstack: admin token: %w", err)
	}
	var out enroll.ApproveResponse
	admin := platform.AdminClient{BaseURL: c.APIURL, Token: strings.TrimSpace(string(tok)), HTTP: &http.Client{Timeout: 30 * time.Second}}
	err = admin.Do(ctx, http.MethodPost, platform.ApprovePath(c.WorkspaceID), map[string]any{"userCode": normalizeUserCode(userCode), "allowScreenControl": allowScreenControl}, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// userCodeShape is a device-flow user code as the agent prints it
// (XXXX-XXXX), in either case, with or without the dash.
var userCodeShape = regexp.MustCompile(`^[A-Za-z0-9]{4}-?[A-Za-z0-9]{4}$`)

// normalizeUserCode upper-cases a well-formed code and puts the dash back;
// anything else is sent as typed (the API answers "no pending enrollment").
func normalizeUserCode(code string) string {
	code = strings.TrimSpace(code)
	if !userCodeShape.MatchString(code) {
		return code
	}
	code = strings.ToUpper(strings.ReplaceAll(code, "-", ""))
	return code[:4] + "-" + code[4:]
}

// devicePageCSP allows nothing: the page is plain server-rendered HTML
// (no scripts, styles, frames, forms or remote loads).
const devicePageCSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var devicePage = template.Must(template.New("device").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Approve a machine - OpenGeni dev platform</title>
</head>
<body>
<h1>Approve a machine</h1>
<p>A machine is asking to join workspace <code>{{.Workspace}}</code> of this dev platform (<code>relay dev</code>).
This page only explains: there is no web console here, so approve it from a terminal on this computer.</p>
{{if .Code}}<p>User code: <strong><code>{{.Code}}</code></strong>. Check that it matches the code the machine printed.</p>
{{end}}<pre>relay ctl --data-dir {{.DataDir}} approve {{if .Code}}{{.Code}}{{else}}USER-CODE{{end}}</pre>
<p>From a checkout of opengeni-agent, <code>relay</code> is <code>bin/relay</code> after <code>go build -o bin/ ./cmd/...</code>,
or <code>go run ./cmd/relay</code>.</p>
<p>Add <code>--allow-screen-control</code> to allow mouse and keyboard control; the machine's owner must consent on the machine
too (<code>opengeni-agent consent screen-control on</code>).</p>
<p>Codes work once and expire after {{.TTL}}. The machine receives its credentials at its next poll.</p>
<p>Without <code>relay ctl</code>, POST <code>{"userCode": "…", "allowScreenControl": false}</code> to
<code>{{.APIURL}}{{.ApprovePath}}</code> with the header <code>Authorization: Bearer &lt;token&gt;</code>,
the token being the content of <code>{{.TokenFile}}</code>.</p>
</body>
</html>
`))

// serveDevicePage is GET /device on the enrollment API's origin: the
// device flow's verification URI, which explains how to approve.
func (p *Platform) serveDevicePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	code := ""
	if c := r.URL.Query().Get("user_code"); userCodeShape.MatchString(c) {
		code = normalizeUserCode(c)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", devicePageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	err := devicePage.Execute(w, map[string]any{
		"Workspace": p.ws, "Code": code, "DataDir": p.dataDir, "TTL": fmt.Sprintf("%d minutes", int(enroll.DeviceCodeTTL.Minutes())),
		// The request's own origin: the API's address as the browser used it.
		"APIURL": "http://" + r.Host, "ApprovePath": platform.ApprovePath(p.ws), "TokenFile": p.AdminTokenFile(),
	})
	if err != nil {
		p.log.Debug("device page not written", "err", err)
	}
}
