package console_test

// One dev stack (relay dev's: embedded NATS with the auth callout, the
// enrollment API, a relay, this machine's agent paired through the device
// flow) with the console mounted on the API's origin, one Xvfb (the local
// machine's display) and one headless Chromium shared by every test of the
// package (each test opens its own tab).

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/opengeni/opengeni-agent/internal/devstack"
	"github.com/opengeni/opengeni-agent/internal/xvfbtest"
)

// EnvArtifacts names where the browser tests save their page screenshots
// (default: <temp dir>/opengeni-console-artifacts, kept after the run).
const EnvArtifacts = "OPENGENI_CONSOLE_ARTIFACTS"

// EnvChromium names the Chromium binary (default: chromium, chromium-browser,
// google-chrome on $PATH).
const EnvChromium = "OPENGENI_CHROMIUM"

var env struct {
	stack     *devstack.Stack
	base      string // the console's origin, http://127.0.0.1:<api port>
	root      string // the local machine's workspace root
	display   string // the Xvfb both test machines show ("" when Xvfb is missing)
	browser   context.Context
	noBrowser string // why browser tests skip
	artifacts string
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "console-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	os.Setenv("HOME", filepath.Join(tmp, "home"))
	os.Setenv("XDG_CACHE_HOME", filepath.Join(tmp, "cache"))
	if bash, err := exec.LookPath("bash"); err == nil {
		os.Setenv("SHELL", bash) // terminals: $RANDOM is bash's
	}

	if d, stop, err := xvfbtest.Start(420, 800, 600); err != nil {
		fmt.Fprintln(os.Stderr, "console tests: no X server, desktop tests skip:", err)
	} else {
		defer stop()
		env.display = d
		os.Setenv("DISPLAY", d) // the local machine's agent shows this display
	}

	env.root = filepath.Join(tmp, "root")
	if err := os.MkdirAll(env.root, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("CONSOLE_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := devstack.Start(ctx, devstack.Options{NATSPort: -1, RelayPort: -1, APIPort: -1, DataDir: filepath.Join(tmp, "data"),
		WorkspaceRoot: env.root, AllowScreenControl: true, Out: io.Discard, Logger: logger})
	if err != nil {
		fmt.Fprintln(os.Stderr, "console tests: dev stack:", err)
		return 1
	}
	defer func() { cancel(); st.Wait() }()
	stopConsole, err := st.MountConsole(logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "console tests: console:", err)
		return 1
	}
	defer stopConsole()
	env.stack, env.base = st, st.Platform().APIURL()

	env.artifacts = os.Getenv(EnvArtifacts)
	if env.artifacts == "" {
		env.artifacts = filepath.Join(os.TempDir(), "opengeni-console-artifacts")
	}
	if err := os.MkdirAll(env.artifacts, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if bin := chromium(); bin == "" {
		env.noBrowser = "no Chromium (apt-get install chromium, or set " + EnvChromium + ")"
	} else {
		opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
			chromedp.WindowSize(1280, 1000), chromedp.Flag("disable-gpu", true))
		actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
		defer acancel()
		bctx, bcancel := chromedp.NewContext(actx)
		defer bcancel()
		if err := chromedp.Do(bctx); err != nil { // starts the browser
			fmt.Fprintln(os.Stderr, "console tests: chromium did not start:", err)
			return 1
		}
		env.browser = bctx
	}
	code := m.Run()
	if env.browser != nil {
		fmt.Fprintf(os.Stderr, "console tests: page screenshots in %s\n", env.artifacts)
	}
	return code
}

func chromium() string {
	if b := os.Getenv(EnvChromium); b != "" {
		return b
	}
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// pointer reads the X pointer's position.
func pointer(t *testing.T) (int, int) {
	t.Helper()
	x, y, err := xvfbtest.Pointer(env.display)
	if err != nil {
		t.Fatal(err)
	}
	return x, y
}

// tab opens a browser tab for the test (closed at its end), bounded by a
// generous deadline: under load Chromium is slow, and nothing here times it.
func tab(t *testing.T) context.Context {
	t.Helper()
	if env.browser == nil {
		t.Skip("SKIP (not a pass): " + env.noBrowser)
	}
	ctx, cancel := chromedp.NewContext(env.browser)
	limit := 3 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("CONSOLE_TEST_TAB_TIMEOUT")); err == nil {
		limit = d
	}
	ctx, tcancel := context.WithTimeout(ctx, limit)
	t.Cleanup(func() { tcancel(); cancel() })
	return ctx
}

// shot saves a PNG of the tab's page as a test artifact.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG (below it, JPEG)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	p := filepath.Join(env.artifacts, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("page screenshot: %s", p)
}

// signIn signs the browser in through the sign-in form unless it already is.
func signIn(t *testing.T, ctx context.Context) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(env.base+"/"))
	waitJS[bool](t, ctx, `document.querySelector('#signin, #nav:not([hidden])') !== null`)
	if eval[bool](t, ctx, `!document.getElementById('nav').hidden`) {
		return
	}
	do(t, ctx, chromedp.SendKeys(css("#token"), env.stack.Platform().AdminToken()), chromedp.Click(css(`#signin button[type="submit"]`)),
		chromedp.WaitVisible(css("#machines")))
}

type css = chromedp.CSS

// do runs browser steps in the test's tab.
func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JS expression (awaiting a promise) in the test's tab.
func eval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitJS waits (bounded by the tab's context) until expr is truthy and
// returns its value.
func waitJS[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	timeout := 3 * time.Minute
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d) - 5*time.Second // leaves time for the screenshot
	}
	v, err := chromedp.Run(ctx, chromedp.Poll[T](expr, chromedp.WithPollingInterval(25*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
		defer cancel()
		if png, serr := chromedp.Run(sctx, chromedp.FullScreenshot(100)); serr == nil {
			p := filepath.Join(env.artifacts, strings.ReplaceAll(t.Name(), "/", "_")+"-failed.png")
			if os.WriteFile(p, png, 0o644) == nil {
				t.Logf("the page when it failed: %s", p)
			}
		}
		t.Fatalf("waiting for %s: %v", expr, err)
	}
	return v
}

// text is an element's textContent.
func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.TextContent(css(sel)))
	if err != nil {
		t.Fatalf("%s: %v", sel, err)
	}
	return s
}

// jsString quotes s for a JS expression.
func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`, "\r", `\r`, "\u2028", `\u2028`, "\u2029", `\u2029`)
	return "'" + r.Replace(s) + "'"
}
