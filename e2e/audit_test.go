package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/audit"
	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
	"github.com/opengeni/opengeni-agent/relay/token"
)

// The owner's view end to end: a real agent on a real nats-server and relay,
// driven through the control library, writing the audit log; the pause
// switch flipped on disk as `opengeni-agent pause` does.

var auditConn = audit.Connection{ID: "0123456789abcdef", Workspace: testWS, Agent: testAgent, Platform: "https://api.example.test"}

func openAuditLog(t testing.TB, dir string) *audit.Log {
	t.Helper()
	l, err := audit.Open(audit.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Close(ctx)
	})
	return l
}

func auditRecords(t testing.TB, l *audit.Log, f audit.Filter) []audit.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var out []audit.Record
	if err := audit.Read(l.Dir(), f, func(r audit.Record) error { out = append(out, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// Every op type leaves one record with its key arguments; secrets passed
// through env values, stdin, file contents, typed text, a bearer in argv and
// the agent's own relay token never appear in the log.
func TestAuditRecordsEveryOpWithoutSecrets(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses a unix shell and PTYs")
	}
	const (
		envSecret   = "ENVSECRET-7f3a9"
		stdinSecret = "STDINSECRET-b81c"
		fileSecret  = "FILESECRET-22de"
		typedSecret = "TYPEDSECRET-90aa"
		keySecret   = "KEYSECRET-41ff"
		bearer      = "BEARERSECRET5c0d11"
	)
	r := startTestRelay(t)
	relayToken, err := token.MintAgent(relayAgentSecret, token.AgentClaims{WorkspaceID: testWS, AgentID: testAgent}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	log := openAuditLog(t, t.TempDir())
	e := newEnv(t, nil, func(o *agent.Options) {
		o.RelayURL, o.RelayToken = r.URL(), relayToken
		o.Observer = log.For(auditConn)
		o.HeldEpoch = 5
		o.Display = ":987" // no such display: the desktop ops answer, headless
	})
	s := e.session(t, func(c *control.SessionConfig) {
		c.Relay = control.ParseRelayURL(r.URL())
		c.Epoch = 5
	})
	ctx := ctxT(t)

	res, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"sh", "-c", "cat >/dev/null; echo $AUDIT_SECRET"},
		Env: map[string]string{"AUDIT_SECRET": envSecret}, Stdin: []byte(stdinSecret)})
	if err != nil || !bytes.Contains(res.GetStdout(), []byte(envSecret)) {
		t.Fatalf("exec: %v %v", res, err)
	}
	if _, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"echo Authorization: Bearer " + bearer}, Shell: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteFile(ctx, "notes.txt", []byte(fileSecret), nil); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadFile(ctx, "notes.txt", 0); err != nil || string(got) != fileSecret {
		t.Fatalf("read: %q %v", got, err)
	}
	if _, err := s.ListFiles(ctx, ".", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Mkdir(ctx, "sub", true, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(ctx, "notes.txt", "sub/moved.txt", false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "sub/moved.txt"); err != nil {
		t.Fatal(err)
	}
	_, _ = s.Git(ctx, agentpb.GitOp_GIT_OP_STATUS, ".") // not a repository: recorded with its code either way
	if err := s.Remove(ctx, "sub", true); err != nil {
		t.Fatal(err)
	}
	term, err := s.PtyOpen(ctx, control.PtyOptions{Command: []string{"/bin/sh"}, Cols: 100, Rows: 30})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PtyWrite(ctx, term.GetPtyId(), []byte("echo "+typedSecret+"\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.PtyResize(ctx, term.GetPtyId(), 120, 40); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PtyClose(ctx, term.GetPtyId()); err != nil {
		t.Fatal(err)
	}
	_, _ = s.Screenshot(ctx)              // headless: UNSUPPORTED
	_, _ = s.DesktopEnsure(ctx, 800, 600) // headless: UNSUPPORTED
	err = s.DesktopInput(ctx, &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Key{Key: &agentpb.KeyEvent{Key: keySecret, IsText: true}}})
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED {
		t.Fatalf("desktop input without consent: %v", err)
	}
	// A stale session is fenced.
	stale := e.session(t, func(c *control.SessionConfig) { c.Epoch = 2 })
	if _, err := stale.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}}); asControlError(t, err).Code != agentpb.ErrorCode_ERROR_CODE_FENCED {
		t.Fatalf("stale epoch: %v", err)
	}
	// An op this agent does not serve.
	raw := natstest.Connect(t, e.srv)
	msg, err := raw.Request("agent."+testWS+"."+testAgent+".rpc", mustMarshal(t, &agentpb.ControlRequest{RequestId: "req-update", Epoch: 5,
		Op: &agentpb.ControlRequest_AgentUpdateApply{AgentUpdateApply: &agentpb.AgentUpdateApplyRequest{TargetVersion: "9.9.9"}}}), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = msg

	recs := auditRecords(t, log, audit.Filter{})
	byOp := map[string][]audit.Record{}
	for _, rc := range recs {
		if rc.Event != "op" {
			continue
		}
		if rc.Connection != auditConn.ID || rc.Workspace != testWS || rc.Agent != testAgent || rc.Platform != auditConn.Platform ||
			rc.Time.IsZero() || rc.BytesIn == 0 || rc.BytesOut == 0 || rc.DurationMs < 0 || rc.Code == "" {
			t.Errorf("record lacks fields: %+v", rc)
		}
		if rc.Op != "none" && rc.RequestID == "" {
			t.Errorf("record without request id: %+v", rc)
		}
		byOp[rc.Op] = append(byOp[rc.Op], rc)
	}
	one := func(op string) audit.Record {
		t.Helper()
		rs := byOp[op]
		if len(rs) == 0 {
			t.Fatalf("no %s record; ops recorded: %v", op, keysOf(byOp))
		}
		return rs[0]
	}
	execs := byOp["exec"]
	if len(execs) != 3 {
		t.Fatalf("%d exec records, want 3 (two served, one fenced)", len(execs))
	}
	if a := execs[0].Args; a.Argv[0] != "sh" || fmt.Sprint(a.EnvKeys) != "[AUDIT_SECRET]" || a.StdinBytes != len(stdinSecret) || *a.ExitCode != 0 || execs[0].Code != "OK" {
		t.Errorf("exec record %+v %+v", execs[0], a)
	}
	if a := execs[1].Args; !a.Shell || len(a.Argv) != 1 {
		t.Errorf("shell exec record %+v", a)
	}
	if execs[2].Code != "FENCED" || execs[2].Message == "" {
		t.Errorf("fenced record %+v", execs[2])
	}
	if w := one("fs_write"); w.Args.Path == "" || w.Args.Bytes != len(fileSecret) {
		t.Errorf("fs_write %+v", w.Args)
	}
	if rd := one("fs_read"); rd.Args.Bytes != len(fileSecret) {
		t.Errorf("fs_read %+v", rd.Args)
	}
	if mv := one("fs_move"); mv.Args.Path == "" || mv.Args.To == "" {
		t.Errorf("fs_move %+v", mv.Args)
	}
	for _, op := range []string{"fs_list", "fs_mkdir", "fs_stat", "fs_remove"} {
		if one(op).Args.Path == "" {
			t.Errorf("%s without a path", op)
		}
	}
	if g := one("git"); g.Args.GitOp != "status" {
		t.Errorf("git %+v", g.Args)
	}
	if o := one("pty_open"); o.Args.Cols != 100 || o.Args.Rows != 30 || o.Args.PtyID == "" || o.Args.Argv[0] != "/bin/sh" {
		t.Errorf("pty_open %+v", o.Args)
	}
	if w := one("pty_write"); w.Args.Bytes != len("echo "+typedSecret+"\n") {
		t.Errorf("pty_write %+v", w.Args)
	}
	if rz := one("pty_resize"); rz.Args.Cols != 120 || rz.Args.Rows != 40 {
		t.Errorf("pty_resize %+v", rz.Args)
	}
	one("pty_close")
	if sc := one("desktop_screenshot"); sc.Code != "UNSUPPORTED" {
		t.Errorf("desktop_screenshot %+v", sc)
	}
	if en := one("desktop_ensure"); en.Args.Width != 800 || en.Code != "UNSUPPORTED" {
		t.Errorf("desktop_ensure %+v", en)
	}
	if in := one("desktop_input"); in.Code != "CONSENT_REQUIRED" || in.Args.Input.Kind != "key" || in.Args.Input.Chars != len(keySecret) {
		t.Errorf("desktop_input %+v %+v", in, in.Args.Input)
	}
	if up := one("agent_update_apply"); up.Code != "UNSUPPORTED" || up.Args.TargetVersion != "9.9.9" || up.RequestID != "req-update" {
		t.Errorf("agent_update_apply %+v", up)
	}

	// Nothing secret on disk.
	files, err := audit.Files(log.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	for _, secret := range []string{envSecret, stdinSecret, fileSecret, typedSecret, keySecret, bearer, relayToken} {
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("the audit log contains the secret %q", secret)
		}
	}
	if !bytes.Contains(all, []byte("AUDIT_SECRET")) || !bytes.Contains(all, []byte("Bearer [redacted]")) {
		t.Errorf("the env key or the redacted bearer is missing")
	}
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// 1,000 concurrent ops leave 1,000 well-formed records.
func TestAuditThousandConcurrentOps(t *testing.T) {
	log := openAuditLog(t, t.TempDir())
	e := newEnv(t, nil, func(o *agent.Options) { o.Observer = log.For(auditConn) })
	before := len(auditRecords(t, log, audit.Filter{})) // the harness's readiness pings
	s := e.session(t, nil)
	ctx := ctxT(t)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if i%2 == 0 {
				_, err = s.Stat(ctx, fmt.Sprintf("f%d", i))
			} else if !s.Ping(ctx) {
				err = errors.New("ping failed")
			}
			if err != nil {
				var ce *control.Error
				if !errors.As(err, &ce) || !ce.Draining { // a busy refusal is an answered op too
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d ops failed", failed.Load())
	}
	recs := auditRecords(t, log, audit.Filter{})
	ids := map[string]bool{}
	for _, r := range recs[before:] {
		if r.Event != "op" || (r.Op != "fs_stat" && r.Op != "ping") || r.Code == "" {
			t.Fatalf("record %+v", r)
		}
		ids[r.RequestID] = true
	}
	if len(recs)-before != 1000 || len(ids) != 1000 {
		t.Fatalf("%d records (%d distinct requests) for 1000 ops", len(recs)-before, len(ids))
	}
}

// The pause switch, read live: a running session's next op is refused with
// CONSENT_REQUIRED (reason paused) naming the owner, ping and metrics still
// answer, Hello says the capabilities are unavailable and why, an open
// terminal closes with the reason; resume restores service; a pause holds
// across an agent restart; every step is in the audit log.
func TestPauseAndResumeLive(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses PTYs")
	}
	store := config.NewStore(t.TempDir())
	pause := func() agent.PauseState {
		p, on := store.Paused(time.Now())
		return agent.PauseState{Paused: on, Until: p.Until}
	}
	log := openAuditLog(t, filepath.Join(store.Dir(), audit.DirName))
	r := startTestRelay(t)
	mutate := func(o *agent.Options) {
		withRelay(t, r)(o)
		o.Pause = pause
		o.Observer = log.For(auditConn)
	}
	e := newEnv(t, nil, mutate)
	watcher := natstest.Connect(t, e.srv)
	hellos := make(chan *nats.Msg, 16)
	if _, err := watcher.ChanSubscribe("agent."+testWS+"."+testAgent+".hello", hellos); err != nil {
		t.Fatal(err)
	}
	if err := watcher.Flush(); err != nil {
		t.Fatal(err)
	}
	s := e.session(t, func(c *control.SessionConfig) { c.Relay = control.ParseRelayURL(r.URL()); c.Epoch = 3 })
	ctx := ctxT(t)
	execOK := func() error {
		_, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true"}})
		return err
	}
	if err := execOK(); err != nil {
		t.Fatal(err)
	}
	term, err := s.OpenTerminal(ctx, control.TerminalOptions{PtyOptions: control.PtyOptions{Command: []string{"/bin/sh"}}, StreamSecret: []byte(relayStreamSecret)})
	if err != nil {
		t.Fatal(err)
	}
	defer term.Detach()
	go func() { // drain output so the terminal never backs up
		for range term.Output() {
		}
	}()

	until := time.Now().Add(time.Hour)
	if _, err := store.SetPause(time.Now(), until); err != nil {
		t.Fatal(err)
	}
	// The very next op is refused: the switch is read on every op.
	err = execOK()
	ce := asControlError(t, err)
	if ce.Code != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED || ce.Reason != control.ReasonConsentRequired || ce.Retryable ||
		ce.Detail["reason"] != "paused" || !bytes.Contains([]byte(ce.Message), []byte("paused by the machine's owner until "+until.UTC().Format(time.RFC3339))) {
		t.Fatalf("op while paused: %+v", ce)
	}
	if !s.Ping(ctx) {
		t.Fatal("ping refused while paused")
	}
	if _, err := s.Metrics(ctx); err != nil {
		t.Fatalf("metrics while paused: %v", err)
	}
	// Hello tells the platform.
	for {
		h := nextHello(t, hellos)
		if c := h.GetCapabilities(); !c.GetExec() && !c.GetFilesystem() && !c.GetGit() && !c.GetPty() && !c.GetDesktop() &&
			bytes.Contains([]byte(c.GetDesktopUnavailableReason()), []byte("paused by the machine's owner")) {
			break
		}
	}
	// The open terminal is closed, and says why.
	select {
	case <-term.Stream.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the terminal was not closed on pause")
	}
	var closed *control.StreamClosedError
	if err := term.Stream.Err(); !errors.As(err, &closed) || closed.Reason != agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL ||
		!bytes.Contains([]byte(closed.Message), []byte("paused by the machine's owner")) {
		t.Fatalf("terminal closed with %v", err)
	}

	if err := store.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := execOK(); err != nil {
		t.Fatalf("after resume: %v", err)
	}
	for {
		if h := nextHello(t, hellos); h.GetCapabilities().GetExec() {
			break
		}
	}

	// Across a restart: paused before the agent starts, refused from its first op.
	if _, err := store.SetPause(time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	e.stopAgent(t)
	e.startAgent(t, mutate)
	if ce := asControlError(t, execOK()); ce.Detail["reason"] != "paused" ||
		!bytes.Contains([]byte(ce.Message), []byte("until they resume it")) {
		t.Fatalf("after restart while paused: %+v", ce)
	}
	if err := store.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := execOK(); err != nil {
		t.Fatalf("after resume past a restart: %v", err)
	}

	// The log has the story: pause, the refusal, resume.
	var events []string
	for _, rc := range auditRecords(t, log, audit.Filter{}) {
		switch {
		case rc.Event == "pause" || rc.Event == "resume":
			events = append(events, rc.Event)
		case rc.Op == "exec":
			events = append(events, "exec:"+rc.Code+":"+rc.Reason)
		}
	}
	// The watcher records a change within PauseWatchInterval, so the pause
	// record may follow the first op that saw the pause: the execs are
	// compared in order, the pause and resume events by count.
	wantExecs := []string{"exec:OK:", "exec:CONSENT_REQUIRED:paused", "exec:OK:", "exec:CONSENT_REQUIRED:paused", "exec:OK:"}
	if got := filterPrefix(events, "exec:"); fmt.Sprint(got) != fmt.Sprint(wantExecs) {
		t.Fatalf("exec records %v, want %v", got, wantExecs)
	}
	if p, r := count(events, "pause"), count(events, "resume"); p < 2 || r < 1 {
		t.Fatalf("pause/resume records %v", events)
	}
}

func filterPrefix(s []string, prefix string) []string {
	var out []string
	for _, x := range s {
		if len(x) >= len(prefix) && x[:len(prefix)] == prefix {
			out = append(out, x)
		}
	}
	return out
}

func count(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

func nextHello(t *testing.T, ch chan *nats.Msg) *agentpb.Hello {
	t.Helper()
	select {
	case m := <-ch:
		h := &agentpb.Hello{}
		if err := proto.Unmarshal(m.Data, h); err != nil {
			t.Fatal(err)
		}
		return h
	case <-time.After(20 * time.Second):
		t.Fatal("no Hello")
	}
	return nil
}

// Pausing closes the live desktop stream with the reason; the viewer sees it.
func TestPauseClosesTheDesktopStream(t *testing.T) {
	if _, err := exec.LookPath("Xvfb"); err != nil {
		t.Skip("SKIP (not a pass): Xvfb is not installed (apt-get install xvfb)")
	}
	store := config.NewStore(t.TempDir())
	r := startTestRelay(t)
	e := newEnv(t, nil, func(o *agent.Options) {
		withRelay(t, r)(o)
		o.Display = ":976" // no such display: a virtual one is started
		o.VirtualDesktop = true
		o.Pause = func() agent.PauseState {
			p, on := store.Paused(time.Now())
			return agent.PauseState{Paused: on, Until: p.Until}
		}
	})
	s := e.session(t, func(c *control.SessionConfig) { c.Relay = control.ParseRelayURL(r.URL()) })
	ctx := ctxT(t)
	first, err := s.DesktopEnsure(ctx, 320, 240)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := s.ResolveExposedPort(ctx, control.DesktopStreamPort)
	if err != nil {
		t.Fatal(err)
	}
	url, err := control.BuildStreamURL(*ep)
	if err != nil {
		t.Fatal(err)
	}
	claims := control.StreamTokenClaims{WorkspaceID: testWS, Mode: control.StreamModeView, Port: control.DesktopStreamPort}
	v, err := control.DialStream(ctx, control.ViewerOptions{URL: url, Channel: first.GetChannel(),
		Token: func(context.Context) (string, error) {
			tok, _, err := control.MintViewerToken([]byte(relayStreamSecret), claims, 0)
			return tok, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	select {
	case <-v.Output(): // streaming
	case <-ctx.Done():
		t.Fatal("no desktop frame")
	}
	go func() {
		for range v.Output() {
		}
	}()
	if _, err := store.SetPause(time.Now(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
	case <-ctx.Done():
		t.Fatal("the desktop stream was not closed on pause")
	}
	var closed *control.StreamClosedError
	if err := v.Err(); !errors.As(err, &closed) || !strings.Contains(closed.Message, "paused by the machine's owner") {
		t.Fatalf("desktop stream closed with %v", err)
	}
	if _, err := s.DesktopEnsure(ctx, 320, 240); asControlError(t, err).Detail["reason"] != "paused" {
		t.Fatalf("desktop_ensure while paused: %v", err)
	}
}

// A disk that refuses the audit log's writes reaches the platform: while
// the log cannot write, heartbeats carry disk_free_bytes 0 (the wire has no
// other field for a full disk); once it writes again they carry the real
// free space.
func TestAuditFullDiskInHeartbeat(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full to stand for a full disk")
	}
	dir := t.TempDir()
	live := audit.LivePath(dir)
	if err := os.Symlink("/dev/full", live); err != nil {
		t.Fatal(err)
	}
	log := openAuditLog(t, dir)
	srv := natstest.Start(t)
	events := subscribeEvents(t, srv.ClientURL(), testWS, testAgent)
	e := &env{srv: srv, root: t.TempDir()}
	e.startAgent(t, func(o *agent.Options) {
		o.Servers = []string{srv.ClientURL()}
		o.Observer = log.For(auditConn)
		o.HeartbeatInterval = 50 * time.Millisecond
	})
	s := e.session(t, nil)
	ctx := ctxT(t)
	mark := func(m string) { // an op the log must keep
		t.Helper()
		if _, err := s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"true", m}}); err != nil {
			t.Fatal(err)
		}
	}
	mark("before-recovery")
	awaitDiskFree := func(want func(uint64) bool) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m := <-events:
				var ev agentpb.AgentEvent
				if err := proto.Unmarshal(m.Data, &ev); err != nil {
					t.Fatal(err)
				}
				if c := ev.GetHeartbeat().GetCapacity(); c != nil && want(c.GetDiskFreeBytes()) {
					return
				}
			case <-timeout:
				t.Fatalf("no heartbeat with the expected disk_free_bytes (audit log status %q)", log.Status())
			}
		}
	}
	awaitDiskFree(func(free uint64) bool { return free == 0 })
	if log.Status() == "" {
		t.Fatal("heartbeat said the disk is full while the audit log writes")
	}
	// The disk has room again: the next record is written and heartbeats
	// report the real free space.
	if err := os.Remove(live); err != nil {
		t.Fatal(err)
	}
	mark("after-recovery")
	if err := log.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	awaitDiskFree(func(free uint64) bool { return free > 0 })
	var argvs []string
	for _, r := range auditRecords(t, log, audit.Filter{Op: "exec"}) {
		argvs = append(argvs, strings.Join(r.Args.Argv, " "))
	}
	if want := []string{"true before-recovery", "true after-recovery"}; !slices.Equal(argvs, want) {
		t.Fatalf("exec records %q, want %q (none lost)", argvs, want)
	}
}

// An exec over op-stream leaves the same trail as a direct one: its
// op_start record with the command's arguments (env keys only) when the
// machine accepted it, and an op_end record with the exit when it ended;
// `--op exec` finds both. Its output and env values are never recorded.
func TestAuditOpStreamExec(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("uses a unix shell")
	}
	const secret = "STREAMSECRET-6c1e"
	log := openAuditLog(t, t.TempDir())
	e := newEnv(t, nil, func(o *agent.Options) { o.Observer = log.For(auditConn) })
	s := e.session(t, func(c *control.SessionConfig) { c.Instances = capsResolver{e.agent} })
	var out bytes.Buffer
	exit, err := s.ExecStream(ctxT(t), control.ExecStreamOptions{
		ExecRequestOptions: control.ExecRequestOptions{Argv: []string{"sh", "-c", "echo $S; exit 3"}, Env: map[string]string{"S": secret}},
		Stdout:             &out})
	if err != nil || exit.GetExitCode() != 3 || !strings.Contains(out.String(), secret) {
		t.Fatalf("ExecStream = %v, %v (stdout %q)", exit, err, out.String())
	}
	recs := auditRecords(t, log, audit.Filter{Op: "exec"})
	if len(recs) != 2 {
		t.Fatalf("%d records for --op exec, want op_start and op_end: %+v", len(recs), recs)
	}
	start, end := recs[0], recs[1]
	if start.Op != "op_start" || start.Args.Starts != "exec" || start.Args.Argv[0] != "sh" || fmt.Sprint(start.Args.EnvKeys) != "[S]" {
		t.Errorf("op_start record %+v %+v", start, start.Args)
	}
	if end.Op != "op_end" || end.RequestID != start.RequestID || end.Args.Starts != "exec" || end.Args.ExitCode == nil ||
		*end.Args.ExitCode != 3 || end.Code != "OK" || end.BytesOut != len(secret)+1 {
		t.Errorf("op_end record %+v %+v", end, end.Args)
	}
	files, err := audit.Files(log.Dir())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if b, err := os.ReadFile(f); err != nil || bytes.Contains(b, []byte(secret)) {
			t.Fatalf("%s holds the secret (or %v)", f, err)
		}
	}
}
