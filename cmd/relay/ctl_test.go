package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/agent/config"
	agentenroll "github.com/opengeni/opengeni-agent/agent/enroll"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/devstack"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// isolate keeps the test away from the user's real dev platform.
func isolate(t *testing.T) {
	t.Helper()
	t.Setenv("HOME", t.TempDir())
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(devstack.EnvDevData, "")
	for _, k := range []string{"OPENGENI_NATS_URL", "OPENGENI_WORKSPACE_ID", "OPENGENI_AGENT_ID", "OPENGENI_RELAY_URL"} {
		t.Setenv(k, "")
	}
}

// ctlRun is `relay ctl ARGS` through the real command function.
type ctlResult struct {
	code           int
	stdout, stderr string
}

func ctl(t *testing.T, args ...string) ctlResult {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(append([]string{"ctl"}, args...), &out, &errb)
	return ctlResult{code, out.String(), errb.String()}
}

func (r ctlResult) want(t *testing.T, code int, stderrHas ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Fatalf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// deadPort is a loopback port nothing listens on.
func deadPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func startStack(t *testing.T, dataDir string, o devstack.Options) *devstack.Stack {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	o.NATSPort, o.RelayPort, o.APIPort, o.DataDir = -1, -1, -1, dataDir
	if o.WorkspaceRoot == "" {
		o.WorkspaceRoot = t.TempDir()
	}
	o.Out, o.Logger = io.Discard, slog.New(slog.DiscardHandler)
	st, err := devstack.Start(ctx, o)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		st.Wait()
	})
	waitOnline(t, st)
	return st
}

// waitOnline waits until the stack's machine answers a ping (Start returns
// before the agent has connected).
func waitOnline(t *testing.T, st *devstack.Stack) {
	t.Helper()
	rpc := control.NewNATSRPC(st.Platform().ControlConnFactory())
	defer rpc.Close()
	sess, err := control.NewSession(control.SessionConfig{WorkspaceID: st.WorkspaceID(), AgentID: st.AgentID(), RPC: rpc, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for !sess.Ping(ctx) {
		if ctx.Err() != nil {
			t.Fatal("the dev machine never answered")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every failure says what happened: the platform cannot be reached (with
// its URL), the credential was refused, the machine is not enrolled, never
// connected, or is reconnecting (from the store's last-seen time).
func TestCtlTellsFailuresApart(t *testing.T) {
	isolate(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	p, err := devstack.StartPlatform(t.Context(), devstack.PlatformOptions{DataDir: dataDir, NATSPort: -1, HTTPPort: -1,
		Out: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	creds, err := p.EnrollLocalMachine(t.Context(), t.TempDir()) // paired, never run
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(p.NATSURL(), "nats://")
	dead := deadPort(t)

	// A copy of ctl.json with another password: a stale file, or a second
	// relay dev on the same port.
	staleDir := t.TempDir()
	var c devstack.CtlFile
	b, _ := os.ReadFile(p.CtlFile())
	json.Unmarshal(b, &c)
	c.Password = "not-the-password"
	b, _ = json.Marshal(c)
	os.WriteFile(filepath.Join(staleDir, devstack.CtlFileName), b, 0o600)

	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"dead NATS port", []string{"--data-dir", t.TempDir(), "--nats", "nats://" + dead, "ping"},
			[]string{"cannot reach the platform at nats://" + dead, "no servers available"}},
		{"no dev platform in the data dir", []string{"--data-dir", filepath.Join(t.TempDir(), "none"), "--nats", "nats://" + dead, "ping"},
			[]string{"cannot reach the platform at nats://" + dead}},
		{"refused credential", []string{"--nats", "nats://control:wrong@" + host, "ping"},
			[]string{"authentication failed", `refused user "control"`, "nats://control:xxxxx@" + host, "Authorization Violation"}},
		{"no credential", []string{"--nats", p.NATSURL(), "ping"},
			[]string{"authentication failed", "none was given"}},
		{"stale ctl.json", []string{"--data-dir", staleDir, "ping"},
			[]string{"authentication failed", "pass --data-dir"}},
		{"unknown machine", []string{"--data-dir", dataDir, "--agent", "ghost", "ping"},
			[]string{"machine ghost is not enrolled in workspace " + p.WorkspaceID()}},
		{"paired, never connected", []string{"--data-dir", dataDir, "ping"},
			[]string{"machine " + creds.AgentID + " is offline: it never connected", "no agent answers on agent." + p.WorkspaceID()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ctl(t, tc.args...)
			r.want(t, 1, tc.want...)
			if strings.Contains(r.stderr, "(offline)") && !strings.Contains(tc.name, "never") {
				t.Fatalf("still says offline: %s", r.stderr)
			}
		})
	}

	// Something holds the machine's subject (its bearer, through the
	// callout) but never answers: not offline, it did not answer in time.
	nc, err := nats.Connect(p.NATSURL(), nats.Token(creds.NATSBearer))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := nc.SubscribeSync(control.SubjectFor(creds.WorkspaceID, creds.AgentID))
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	ctl(t, "--data-dir", dataDir, "--timeout", "300ms", "ping").want(t, 1,
		"machine "+creds.AgentID+" (workspace "+creds.WorkspaceID+") did not answer in time (no answer within 300ms; --timeout)")
	sub.Unsubscribe()
	nc.Close()

	// The machine was seen a moment ago (its heartbeat ingested) and does not
	// answer now: reconnecting, not offline.
	hb := &agentpb.Heartbeat{Metrics: &agentpb.MetricsSample{SampledAtMs: time.Now().UnixMilli()}}
	if err := p.Store().ApplyHeartbeat(t.Context(), creds.WorkspaceID, creds.AgentID, hb); err != nil {
		t.Fatal(err)
	}
	ctl(t, "--data-dir", dataDir, "ping").want(t, 1, "machine "+creds.AgentID+" is reconnecting: last seen")
}

// Two dev stacks side by side in two data dirs share no file: each has its
// own relay URL, viewer secret and ctl.json, relay ctl --data-dir picks
// one, and stopping one leaves the other's files and machine alone.
func TestTwoDevStacksSideBySide(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a unix shell")
	}
	isolate(t)
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	a := startStack(t, dirA, devstack.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	b, err := devstack.Start(ctx, devstack.Options{NATSPort: -1, RelayPort: -1, APIPort: -1, DataDir: dirB,
		WorkspaceRoot: t.TempDir(), Out: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	defer cancel() // B is waited for below
	waitOnline(t, b)

	for _, st := range []*devstack.Stack{a, b} {
		dir := st.Platform().DataDir()
		url, secret, err := devstack.ReadDevFiles(dir)
		if err != nil || url != st.RelayURL() || !bytes.Equal(secret, st.StreamSecret()) {
			t.Fatalf("%s: dev files %q %v, stack relay %q", dir, url, err, st.RelayURL())
		}
		r := ctl(t, "--data-dir", dir, "ping")
		r.want(t, 0)
		if !strings.Contains(r.stdout, "pong from "+st.AgentID()) {
			t.Fatalf("%s: %q", dir, r.stdout)
		}
	}
	if a.RelayURL() == b.RelayURL() {
		t.Fatal("both stacks on one relay")
	}
	// OPENGENI_DEV_DATA is --data-dir's default.
	t.Setenv(devstack.EnvDevData, dirB)
	if r := ctl(t, "ping"); !strings.Contains(r.stdout, "pong from "+b.AgentID()) {
		t.Fatalf("env data dir: %+v", r)
	}
	t.Setenv(devstack.EnvDevData, "")

	// Stop B: A's files stay, A still answers, B's are gone and ctl says B's
	// platform is unreachable.
	cancel()
	if err := b.Wait(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := devstack.ReadDevFiles(dirA); err != nil {
		t.Fatalf("stopping B removed A's files: %v", err)
	}
	if _, _, err := devstack.ReadDevFiles(dirB); err == nil {
		t.Fatal("B's files left behind")
	}
	ctl(t, "--data-dir", dirA, "ping").want(t, 0)
	ctl(t, "--data-dir", dirB, "ping").want(t, 1, "cannot reach the platform at "+b.NATSURL(), "is `relay dev` running with data dir "+dirB)
}

// The commands' output: exit codes relayed, readable stat kinds, transfer
// lines without carriage returns off a terminal.
func TestCtlCommandsOutput(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a unix shell")
	}
	isolate(t)
	dir := filepath.Join(t.TempDir(), "data")
	startStack(t, dir, devstack.Options{})

	ctl(t, "--data-dir", dir, "exec", "--", "sh", "-c", "echo out; exit 7").want(t, 7)
	local := filepath.Join(t.TempDir(), "f")
	os.WriteFile(local, bytes.Repeat([]byte("x"), 3<<20), 0o644)
	remote := filepath.Join(t.TempDir(), "copy")
	r := ctl(t, "--data-dir", dir, "put", local, remote)
	r.want(t, 0, "put "+local+": 3.0 MiB in ")
	if strings.Contains(r.stderr, "\r") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("progress drawn off a terminal: %q", r.stderr)
	}
	r = ctl(t, "--data-dir", dir, "stat", remote)
	r.want(t, 0)
	if !strings.Contains(r.stdout, remote+": file, 3145728 bytes") {
		t.Fatalf("stat: %q", r.stdout)
	}
	r = ctl(t, "--data-dir", dir, "stat", filepath.Dir(remote))
	if !strings.Contains(r.stdout, ": directory,") || strings.Contains(r.stdout, "FS_ENTRY_KIND") {
		t.Fatalf("stat dir: %q", r.stdout)
	}
}

// A second machine pairs through the device flow: the verification URI the
// agent prints is a page that explains how to approve, and `relay ctl
// approve` approves with the admin token from the data dir.
func TestDevicePageAndApprove(t *testing.T) {
	isolate(t)
	dir := filepath.Join(t.TempDir(), "data")
	st := startStack(t, dir, devstack.Options{})
	p := st.Platform()
	id, err := config.NewStore(t.TempDir()).Identity()
	if err != nil {
		t.Fatal(err)
	}
	client := &agentenroll.Client{BaseURL: p.APIURL(), Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}
	start, err := client.Start(t.Context(), agentenroll.StartRequest{WorkspaceID: p.WorkspaceID(), PublicKey: id.PublicKey(),
		OS: agentenroll.HostOS(), Arch: agentenroll.HostArch(), MachineName: "second"})
	if err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(start.VerificationURIComplete)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(csp, "default-src 'none'") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET %s: %d, CSP %q", start.VerificationURIComplete, resp.StatusCode, csp)
	}
	for _, want := range []string{"relay ctl --data-dir " + dir + " approve " + start.UserCode, "--allow-screen-control"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Fatalf("page lacks %q:\n%s", want, page)
		}
	}
	if bytes.Contains(bytes.ToLower(page), []byte("<script")) || bytes.Contains(bytes.ToLower(page), []byte("style=")) {
		t.Fatalf("page has inline script or style:\n%s", page)
	}
	// A hostile user_code is not reflected.
	resp, err = http.Get(start.VerificationURI + "?user_code=%3Cscript%3Ealert(1)%3C/script%3E")
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(page, []byte("alert")) {
		t.Fatalf("user_code reflected:\n%s", page)
	}

	ctl(t, "--data-dir", dir, "approve", "ZZZZ-ZZZZ").want(t, 1, "no pending enrollment for that code (HTTP 404)")
	r := ctl(t, "--data-dir", dir, "approve", strings.ToLower(start.UserCode), "--allow-screen-control")
	r.want(t, 0)
	if !strings.Contains(r.stdout, "approved: agent ") || !strings.Contains(r.stdout, "screen control allowed") {
		t.Fatalf("approve: %q", r.stdout)
	}
	wire, err := client.Poll(t.Context(), start)
	if err != nil || wire.AgentID == "" || !wire.ConsentedScreenControl {
		t.Fatalf("poll after approve: %+v %v", wire, err)
	}
}

// relay dev --virtual-desktop on a headless host: ctl screenshot starts the
// virtual display, says the bare display is black; click needs consent and
// says how to grant it; the consent the owner records in the agent config
// dir applies at once.
func TestCtlScreenshotAndConsentOnVirtualDesktop(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("Xvfb is Linux only")
	}
	if _, err := exec.LookPath("Xvfb"); err != nil {
		t.Skip("Xvfb is not installed")
	}
	isolate(t)
	t.Setenv("DISPLAY", "") // headless
	dir := filepath.Join(t.TempDir(), "data")
	st := startStack(t, dir, devstack.Options{VirtualDesktop: true})
	out := filepath.Join(t.TempDir(), "out.png")
	r := ctl(t, "--data-dir", dir, "screenshot", out)
	r.want(t, 0, "started the machine's virtual display", "all black")
	if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
		t.Fatalf("no PNG: %v", err)
	}
	agentDir := st.Platform().AgentConfigDir()
	ctl(t, "--data-dir", dir, "click", "10", "10").want(t, 1, "CONSENT_REQUIRED",
		"opengeni-agent consent screen-control on", "OPENGENI_CONFIG_DIR="+agentDir, "--allow-screen-control")
	// What `opengeni-agent consent screen-control on` does with that dir.
	cs := config.NewStore(agentDir)
	conns, err := cs.List()
	if err != nil || len(conns) != 1 {
		t.Fatalf("agent config dir: %v %v", conns, err)
	}
	if err := cs.SetScreenControl(conns[0].ID, true); err != nil {
		t.Fatal(err)
	}
	ctl(t, "--data-dir", dir, "click", "10", "10").want(t, 0)
}

var (
	relayBinOnce sync.Once
	relayBin     string
	relayBinErr  error
)

// builtRelay builds cmd/relay once per package run.
func builtRelay(t *testing.T) string {
	t.Helper()
	relayBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "relay-bin-")
		if err != nil {
			relayBinErr = err
			return
		}
		relayBin = filepath.Join(dir, "relay")
		if runtime.GOOS == "windows" {
			relayBin += ".exe"
		}
		out, err := exec.Command("go", "build", "-o", relayBin, ".").CombinedOutput()
		if err != nil {
			relayBinErr = &buildError{out: string(out), err: err}
		}
	})
	if relayBinErr != nil {
		t.Fatal(relayBinErr)
	}
	return relayBin
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// The built binary keeps exit codes (what the README's bin/relay examples
// rely on) and says why it failed.
func TestRelayBinaryExitCodes(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("needs a unix shell")
	}
	bin := builtRelay(t) // before isolate: the build uses the real Go caches
	isolate(t)
	dir := filepath.Join(t.TempDir(), "data")
	startStack(t, dir, devstack.Options{})
	cmd := exec.Command(bin, "ctl", "--data-dir", dir, "exec", "--", "sh", "-c", "exit 7")
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 7 {
		t.Fatalf("exec exit 7: %v", err)
	}
	dead := deadPort(t)
	var stderr bytes.Buffer
	cmd = exec.Command(bin, "ctl", "--nats", "nats://"+dead, "ping")
	cmd.Stderr = &stderr
	cmd.Run()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(stderr.String(), "cannot reach the platform at nats://"+dead) {
		t.Fatalf("dead port: exit %d, %q", cmd.ProcessState.ExitCode(), stderr.String())
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "relay ") {
		t.Fatalf("--version: %q %v", out, err)
	}
}

// relay dev --allow-screen-control records the consent in the machine's
// agent config dir: input passes the consent gate (a headless machine then
// answers UNSUPPORTED for the missing display, not CONSENT_REQUIRED).
func TestDevAllowScreenControl(t *testing.T) {
	isolate(t)
	t.Setenv("DISPLAY", "") // headless, no virtual desktop
	dir := filepath.Join(t.TempDir(), "data")
	st := startStack(t, dir, devstack.Options{AllowScreenControl: true})
	if !st.ScreenControl() {
		t.Fatal("consent not recorded")
	}
	r := ctl(t, "--data-dir", dir, "click", "1", "1")
	r.want(t, 1, "UNSUPPORTED")
	if strings.Contains(r.stderr, "CONSENT_REQUIRED") {
		t.Fatalf("consent flag ignored: %s", r.stderr)
	}
}
