package console_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/config"
	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/internal/natstest"
)

func machineRowOnline(id string) string {
	return fmt.Sprintf(`tr[data-machine="%s"] [data-state="online"]`, id)
}

func TestSignInAndSeeTheLocalMachineOnline(t *testing.T) {
	ctx := tab(t)
	do(t, ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.ClearBrowserCookies, cdp.Empty{})
		return err
	}), chromedp.Navigate(env.base+"/"), chromedp.WaitVisible(css("#signin")))
	shot(t, ctx, "signin")

	do(t, ctx, chromedp.SendKeys(css("#token"), "ogadm_wrong"), chromedp.Click(css(`#signin button[type="submit"]`)),
		chromedp.WaitVisible(css("#signin-msg .error")))
	if msg := text(t, ctx, "#signin-msg"); !strings.Contains(msg, "wrong admin token") {
		t.Fatalf("wrong token: %q", msg)
	}
	do(t, ctx, chromedp.SetValue(css("#token"), env.stack.Platform().AdminToken()), chromedp.Click(css(`#signin button[type="submit"]`)),
		chromedp.WaitVisible(css(machineRowOnline(env.stack.AgentID()))))
	row := fmt.Sprintf(`tr[data-machine="%s"]`, env.stack.AgentID())
	host, _ := os.Hostname()
	if got := text(t, ctx, row+" a.name"); got != host {
		t.Fatalf("machine name %q, want %q", got, host)
	}
	if got := text(t, ctx, row+" td.consent"); got != "allowed" {
		t.Fatalf("screen control shown as %q (the dev machine consented)", got)
	}
	// The chart draws the stored series once a heartbeat stored a sample.
	do(t, ctx, chromedp.WaitVisible(css(row+" svg.spark polyline.cpu")))
	shot(t, ctx, "machines")

	// Sign out: the session is gone and the sign-in form is back.
	do(t, ctx, chromedp.Click(css("#signout")), chromedp.WaitVisible(css("#signin")),
		chromedp.Navigate(env.base+"/"), chromedp.WaitVisible(css("#signin")))
}

// consoleLine finds an output line console-<digits> in the terminal's rows.
const consoleLine = `(() => { const l = Array.from(document.querySelectorAll('#terminal .xterm-rows > div'))
	.map((d) => d.textContent.replace(/\u00a0/g, ' ').trim()).find((l) => /^console-\d+$/.test(l)); return l || false; })()`

func TestTerminalRunsACommandAndSurvivesAReload(t *testing.T) {
	ctx := tab(t)
	signIn(t, ctx)
	do(t, ctx, chromedp.Navigate(env.base+"/machines/"+env.stack.AgentID()))
	waitJS[bool](t, ctx, `document.getElementById('terminal-status')?.textContent === 'connected'`)
	// Typed as text input (what xterm.js reads from its textarea), then
	// Enter as a key. chromedp's SendKeys sends each character both as a
	// key with text and as a char event, which xterm.js would see twice.
	do(t, ctx, chromedp.Focus(css("#terminal .xterm-helper-textarea")), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, input.InsertText, input.InsertTextParams{Text: "echo console-$RANDOM"})
		return err
	}), chromedp.KeyEvent(kb.Enter))
	line := waitJS[string](t, ctx, consoleLine)
	if !regexp.MustCompile(`^console-\d+$`).MatchString(line) {
		t.Fatalf("terminal line %q", line)
	}
	shot(t, ctx, "terminal")

	// A reload re-attaches to the same terminal and replays its output.
	do(t, ctx, chromedp.Reload())
	waitJS[bool](t, ctx, `document.getElementById('terminal-status')?.textContent === 'connected'`)
	again := waitJS[string](t, ctx, consoleLine)
	if again != line {
		t.Fatalf("after the reload the terminal shows %q, want %q", again, line)
	}
}

func TestFilesUploadDownloadAndManage(t *testing.T) {
	ctx := tab(t)
	signIn(t, ctx)
	src := filepath.Join(t.TempDir(), "upload-5mb.bin")
	data := make([]byte, 5<<20)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	do(t, ctx, chromedp.Navigate(env.base+"/machines/"+env.stack.AgentID()+"?tab=Files"),
		chromedp.WaitReady(css("#upload-file")),
		chromedp.SetUploadFiles(css("#upload-file"), []string{src}),
		chromedp.WaitVisible(css(`#upload-status[data-done]`)),
		chromedp.WaitVisible(css(`tr[data-name="upload-5mb.bin"]`)))
	if got, err := os.ReadFile(filepath.Join(env.root, "upload-5mb.bin")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("uploaded file on the machine: %d bytes, %v (want the 5 MiB sent)", len(got), err)
	}
	progress := eval[float64](t, ctx, `document.getElementById('upload-progress').value`)
	if progress != 100 {
		t.Fatalf("progress bar at %v after the upload", progress)
	}

	// Download it back through the browser.
	dl := t.TempDir()
	progressEvents := chromedp.Events(ctx, browser.DownloadProgress)
	events := true
	do(t, ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Call(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
			Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dl, EventsEnabled: &events})
		return err
	}), chromedp.Click(css(`tr[data-name="upload-5mb.bin"] a.download`)))
	for ev, err := range progressEvents {
		if err != nil {
			t.Fatalf("the download never completed: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("the download was canceled")
		}
		if ev.State != browser.DownloadProgressStateCompleted {
			continue
		}
		got, err := os.ReadFile(filepath.Join(dl, ev.GUID))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("downloaded %d bytes, %v; want the 5 MiB uploaded, byte-equal", len(got), err)
		}
		break
	}

	// mkdir, rename, delete (with confirmation).
	do(t, ctx, chromedp.SendKeys(css("#mkdir-name"), "made-dir"), chromedp.Click(css("#mkdir")),
		chromedp.WaitVisible(css(`tr[data-name="made-dir"]`)))
	if fi, err := os.Stat(filepath.Join(env.root, "made-dir")); err != nil || !fi.IsDir() {
		t.Fatalf("mkdir: %v", err)
	}
	do(t, ctx, chromedp.Click(css(`tr[data-name="made-dir"] button.rename`)),
		chromedp.SetValue(css(`tr[data-name="made-dir"] input.rename-to`), "renamed-dir"),
		chromedp.Click(css(`tr[data-name="made-dir"] button.rename`)),
		chromedp.WaitVisible(css(`tr[data-name="renamed-dir"]`)))
	if fi, err := os.Stat(filepath.Join(env.root, "renamed-dir")); err != nil || !fi.IsDir() {
		t.Fatalf("rename: %v", err)
	}
	do(t, ctx, chromedp.Click(css(`tr[data-name="renamed-dir"] button.delete`)))
	if got := text(t, ctx, `tr[data-name="renamed-dir"] button.delete`); got != "Really delete folder?" {
		t.Fatalf("delete asks %q", got)
	}
	if _, err := os.Stat(filepath.Join(env.root, "renamed-dir")); err != nil {
		t.Fatalf("deleted before the confirmation: %v", err)
	}
	shot(t, ctx, "files")
	do(t, ctx, chromedp.Click(css(`tr[data-name="renamed-dir"] button.delete`)))
	waitJS[bool](t, ctx, `document.querySelector('tr[data-name="renamed-dir"]') === null`)
	if _, err := os.Stat(filepath.Join(env.root, "renamed-dir")); !os.IsNotExist(err) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestGitStatusAndCommand(t *testing.T) {
	ctx := tab(t)
	signIn(t, ctx)
	do(t, ctx, chromedp.Navigate(env.base+"/machines/"+env.stack.AgentID()+"?tab=Command"),
		chromedp.SendKeys(css("#command"), "echo one-off-$((6*7)); echo err >&2; exit 3"),
		chromedp.Click(css("#command-run")), chromedp.WaitVisible(css("#command-exit")))
	if out, code := text(t, ctx, "#command-stdout"), text(t, ctx, "#command-exit"); out != "one-off-42\n" || code != "exit code 3" {
		t.Fatalf("command: %q, %q", out, code)
	}
	shot(t, ctx, "command")
	do(t, ctx, chromedp.Click(css("#tab-git")), chromedp.Click(css("#git-run")))
	waitJS[bool](t, ctx, `document.getElementById('git-out')?.textContent.includes('Not a git repository')`)
	shot(t, ctx, "git")
}

// xssName is stored verbatim by the device flow: markup, an RLO and a NUL.
const xssName = "<script>alert(1)</script>\u202e\x00evil"

// xssShown is how the console prints it: as text, controls made visible.
const xssShown = `<script>alert(1)</script>\u202e\u0000evil`

// A second agent pairs through the device flow: the /device page (with and
// without the code in the URL) shows what it asks, the owner approves, and
// the machine appears online. Its name is hostile and renders as text. It
// has no screen-control consent, so its desktop is view-only.
func TestDeviceFlowApprovalAndAHostileName(t *testing.T) {
	ctx := tab(t)
	var dialogs atomic.Int32
	dialogEvents := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogEvents {
			if err != nil {
				return
			}
			dialogs.Add(1)
			t.Errorf("a script ran: dialog %q", ev.Message)
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	signIn(t, ctx)

	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	client := &agentenroll.Client{BaseURL: env.base, UserAgent: "console-test",
		Sleep: func(ctx context.Context, d time.Duration) error {
			select { // polls until approved; the test approves first
			case <-time.After(min(d, 100*time.Millisecond)):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}}
	start, err := client.Start(ctx, agentenroll.StartRequest{WorkspaceID: env.stack.WorkspaceID(), PublicKey: id.PublicKey(),
		OS: agentenroll.HostOS(), Arch: agentenroll.HostArch(), MachineName: xssName, CanOfferDisplay: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(start.VerificationURI, env.base+"/device") {
		t.Fatalf("verification URI %q is not this console's /device", start.VerificationURI)
	}

	// /device without a code: type it.
	do(t, ctx, chromedp.Navigate(start.VerificationURI), chromedp.WaitVisible(css("#user-code")))
	shot(t, ctx, "device-enter-code")
	do(t, ctx, chromedp.SendKeys(css("#user-code"), strings.ToLower(start.UserCode)), chromedp.Click(css("#lookup")),
		chromedp.WaitVisible(css("#device-machine-name")))
	if got := text(t, ctx, "#device-machine-name"); got != xssShown {
		t.Fatalf("device page shows the name as %q, want %q", got, xssShown)
	}
	// /device?user_code=… (what the agent prints): looked up at once.
	do(t, ctx, chromedp.Navigate(start.VerificationURIComplete), chromedp.WaitVisible(css("#approve")))
	if got := text(t, ctx, "#device-machine-name"); got != xssShown {
		t.Fatalf("device page shows the name as %q", got)
	}
	if perms := text(t, ctx, "#device-permissions"); !strings.Contains(perms, "Can show its display") || !strings.Contains(perms, "Does not ask for screen control") {
		t.Fatalf("requested permissions: %q", perms)
	}
	shot(t, ctx, "device")
	do(t, ctx, chromedp.Click(css("#approve")), chromedp.WaitVisible(css("[data-approved]")))
	creds, err := client.Poll(ctx, start)
	if err != nil {
		t.Fatal(err)
	}

	actx, acancel := context.WithCancel(context.Background())
	a, err := agent.New(agent.Options{Servers: creds.NATSURLs, Token: creds.Bearer, WorkspaceID: creds.WorkspaceID, AgentID: creds.AgentID,
		RelayURL: creds.RelayURL, RelayToken: creds.RelayToken, MachineName: xssName, Display: env.display, WorkspaceRoot: t.TempDir(),
		Consent: func() agent.Consent { return agent.Consent{WholeMachine: true} }, // no screen control
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		acancel()
		t.Fatal(err)
	}
	ran := make(chan struct{})
	go func() { defer close(ran); a.Run(actx) }()
	t.Cleanup(func() { acancel(); <-ran })

	do(t, ctx, chromedp.Navigate(env.base+"/"), chromedp.WaitVisible(css(machineRowOnline(creds.AgentID))))
	if got := text(t, ctx, fmt.Sprintf(`tr[data-machine="%s"] a.name`, creds.AgentID)); got != xssShown {
		t.Fatalf("machines list shows the name as %q, want %q", got, xssShown)
	}
	scripts := eval[int](t, ctx, `document.querySelectorAll('script').length`)
	if scripts != 1 || dialogs.Load() != 0 {
		t.Fatalf("%d script elements (want the app's one), %d dialogs", scripts, dialogs.Load())
	}
	shot(t, ctx, "machines-paired")

	t.Run("desktop without consent", func(t *testing.T) {
		if env.display == "" {
			t.Skip("SKIP (not a pass): Xvfb is not installed (apt-get install xvfb)")
		}
		do(t, ctx, chromedp.Navigate(env.base+"/machines/"+creds.AgentID+"?tab=Desktop"),
			chromedp.WaitVisible(css("#desktop-frame[data-seq]")),
			chromedp.WaitVisible(css(`#desktop-consent[data-allowed="false"]`)))
		if !eval[bool](t, ctx, `['desktop-text','desktop-type','desktop-enter'].every((id) => document.getElementById(id).disabled)`) {
			t.Fatal("input controls are enabled without consent")
		}
		x0, y0 := pointer(t)
		cx, cy := framePoint(t, ctx, (x0+311)%800, (y0+211)%600)
		do(t, ctx, chromedp.MouseClickXY(cx, cy))
		// Even a request made by hand is refused before it reaches the machine.
		status := eval[int](t, ctx, fmt.Sprintf(`(async () => { const s = await (await fetch('/api/session')).json();
			const r = await fetch('/api/machines/%s/desktop/input', {method: 'POST', headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf},
			body: JSON.stringify({kind: 'move', x: 5, y: 5, width: 800, height: 600})}); return r.status; })()`, creds.AgentID))
		if status != 403 {
			t.Fatalf("input without consent answered %d, want 403", status)
		}
		if x, y := pointer(t); x != x0 || y != y0 {
			t.Fatalf("the pointer moved without consent: (%d,%d) -> (%d,%d)", x0, y0, x, y)
		}
		shot(t, ctx, "desktop-no-consent")
	})
}

// framePoint is the page point over desktop-frame pixel (x, y).
func framePoint(t *testing.T, ctx context.Context, x, y int) (float64, float64) {
	t.Helper()
	do(t, ctx, chromedp.ScrollIntoView(css("#desktop-frame"))) // the point must be in the viewport
	r := eval[struct {
		Left   float64 `json:"left"`
		Top    float64 `json:"top"`
		Width  float64 `json:"width"`
		Height float64 `json:"height"`
		NW     float64 `json:"nW"`
		NH     float64 `json:"nH"`
	}](t, ctx, `(() => { const i = document.getElementById('desktop-frame'); const r = i.getBoundingClientRect();
		return {left: r.left, top: r.top, width: r.width, height: r.height, nW: i.naturalWidth, nH: i.naturalHeight}; })()`)
	if r.NW == 0 || r.Width == 0 {
		t.Fatalf("desktop frame not drawn: %+v", r)
	}
	// Mouse events carry whole CSS pixels: take the first whole pixel inside
	// the frame pixel (the page maps a point to the pixel under it).
	return math.Ceil(r.Left + float64(x)*r.Width/r.NW), math.Ceil(r.Top + float64(y)*r.Height/r.NH)
}

func TestDesktopWithConsentClicksOnTheMachine(t *testing.T) {
	if env.display == "" {
		t.Skip("SKIP (not a pass): Xvfb is not installed (apt-get install xvfb)")
	}
	ctx := tab(t)
	signIn(t, ctx)
	do(t, ctx, chromedp.Navigate(env.base+"/machines/"+env.stack.AgentID()+"?tab=Desktop"),
		chromedp.WaitVisible(css("#desktop-frame[data-seq]")),
		chromedp.WaitVisible(css(`#desktop-consent[data-allowed="true"]`)))
	natural := eval[[]int](t, ctx, `(() => { const i = document.getElementById('desktop-frame'); return [i.naturalWidth, i.naturalHeight]; })()`)
	if len(natural) != 2 || natural[0] != 800 || natural[1] != 600 {
		t.Fatalf("desktop frame %v, want the 800x600 display", natural)
	}
	x0, y0 := pointer(t)
	want := [2]int{(x0 + 217) % 800, (y0 + 143) % 600}
	cx, cy := framePoint(t, ctx, want[0], want[1])
	do(t, ctx, chromedp.MouseClickXY(cx, cy))
	natstest.Eventually(t, 30*time.Second, func() error {
		if x, y := pointer(t); x != want[0] || y != want[1] {
			return fmt.Errorf("pointer at (%d,%d), want (%d,%d)", x, y, want[0], want[1])
		}
		return nil
	})
	shot(t, ctx, "desktop")

	// The screenshot button downloads a PNG of the display.
	ctype := eval[string](t, ctx, `(async () => (await fetch(document.getElementById('desktop-screenshot').href)).headers.get('content-type'))()`)
	if ctype != "image/png" {
		t.Fatalf("screenshot answered %q", ctype)
	}
}

// Pairing page: mint a one-time enroll token (the install command carries
// it and this API), pair a machine with it, and revoke that enrollment.
func TestPairingMintTokenAndRevoke(t *testing.T) {
	ctx := tab(t)
	signIn(t, ctx)
	do(t, ctx, chromedp.Navigate(env.base+"/pairing"), chromedp.WaitVisible(css("#enrollments")),
		chromedp.Click(css("#mint")), chromedp.WaitVisible(css("#install-command")))
	cmd, err := chromedp.Run(ctx, chromedp.Value(css("#install-command")))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`^OPENGENI_ENROLL_TOKEN='(oget_[^']+)' opengeni-agent enroll --api-url '([^']+)' && opengeni-agent run$`).FindStringSubmatch(cmd)
	if m == nil || m[2] != env.base {
		t.Fatalf("install command %q", cmd)
	}
	shot(t, ctx, "pairing-token")

	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := (&agentenroll.Client{BaseURL: m[2]}).Exchange(ctx, agentenroll.ExchangeRequest{Token: m[1], PublicKey: id.PublicKey(),
		OS: agentenroll.HostOS(), Arch: agentenroll.HostArch(), MachineName: "token-paired"})
	if err != nil {
		t.Fatalf("the minted token does not pair: %v", err)
	}
	row := fmt.Sprintf(`tr[data-enrollment="%s"]`, creds.AgentID)
	do(t, ctx, chromedp.Reload(), chromedp.WaitVisible(css(row)))
	if got := text(t, ctx, row+" td.status"); got != "active" {
		t.Fatalf("new enrollment shown as %q", got)
	}
	do(t, ctx, chromedp.Click(css(row+" button.revoke")))
	if got := text(t, ctx, row+" button.revoke"); got != "Really revoke?" {
		t.Fatalf("revoke asks %q", got)
	}
	if e, err := env.stack.Platform().Store().GetEnrollment(ctx, env.stack.WorkspaceID(), creds.AgentID); err != nil || !e.Active() {
		t.Fatalf("revoked before the confirmation: %+v %v", e, err)
	}
	do(t, ctx, chromedp.Click(css(row+" button.revoke")))
	waitJS[bool](t, ctx, fmt.Sprintf(`document.querySelector('%s td.status')?.textContent === 'revoked'`, row))
	if e, err := env.stack.Platform().Store().GetEnrollment(ctx, env.stack.WorkspaceID(), creds.AgentID); err != nil || e.Active() {
		t.Fatalf("after revoke: %+v %v", e, err)
	}
	shot(t, ctx, "pairing")
}
