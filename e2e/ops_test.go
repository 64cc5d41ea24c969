//go:build unix

package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func asControlError(t *testing.T, err error) *control.Error {
	t.Helper()
	var ce *control.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *control.Error, got %T %v", err, err)
	}
	if control.IsProviderNotFound(err) {
		t.Fatal("a machine error must never be a provider not-found")
	}
	return ce
}

func TestExecEndToEnd(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)

	r, err := s.Exec(ctx, control.ExecOptions{Cmd: "echo hello $OPENGENI_E2E_UNSET; pwd; exit 3"})
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode != 3 || r.Stdout != "hello\n"+e.root+"\n" {
		t.Fatalf("exec = %+v", r)
	}
	if out, err := s.ExecCommand(ctx, "printf %s \"$0\" >&2; echo out", ""); err != nil || out != "out\n" {
		t.Fatalf("ExecCommand = %q, %v", out, err)
	}

	os.MkdirAll(filepath.Join(e.root, "sub dir"), 0o755)
	resp, err := s.ExecArgs(ctx, control.ExecRequestOptions{
		Argv:    []string{"sh", "-c", `read line; echo "$line|$FOO|$(pwd)"`},
		Workdir: "/workspace/sub dir",
		Env:     map[string]string{"FOO": "bar baz"},
		Stdin:   []byte("piped-in\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(resp.GetStdout()), "piped-in|bar baz|"+filepath.Join(e.root, "sub dir")+"\n"; got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}

	// argv is not interpreted by a shell.
	resp, err = s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"echo", "$HOME", "a  b"}})
	if err != nil || string(resp.GetStdout()) != "$HOME a  b\n" {
		t.Fatalf("argv exec: %q %v", resp.GetStdout(), err)
	}

	_, err = s.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{"/no/such/program"}})
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND || !ce.OSNotFound {
		t.Fatalf("missing program: %+v", ce)
	}
}

func TestExecTimeoutKillsTreeThatIgnoresSIGTERM(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	pidFile := filepath.Join(e.root, "grandchild.pid")
	resp, err := s.ExecArgs(ctxT(t), control.ExecRequestOptions{
		Argv:    []string{"sh", "-c", `trap '' TERM; sh -c 'trap "" TERM; sleep 300' & echo $! > ` + pidFile + `; echo started; wait`},
		Timeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetTimedOut() || resp.GetExitCode() != -1 {
		t.Fatalf("want timed_out and exit -1, got %+v", resp)
	}
	if !strings.Contains(string(resp.GetStdout()), "started") {
		t.Fatalf("output before the timeout was lost: %q", resp.GetStdout())
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	natstest.Eventually(t, 10*time.Second, func() error {
		if err := syscall.Kill(pid, 0); err == nil {
			// A zombie still answers kill(0); check its state.
			st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			if !strings.Contains(string(st), ") Z ") && len(st) > 0 {
				return errors.New("grandchild still alive")
			}
		}
		return nil
	})
}

func TestExecReturnsWhenBackgroundChildKeepsPipeOpen(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, func(c *control.SessionConfig) { c.Timeout = 20 * time.Second })
	// The reply must come long before the child's 30s; the session timeout
	// (20s) is the failure condition, not a timing assertion.
	r, err := s.Exec(ctxT(t), control.ExecOptions{Cmd: "sleep 30 & echo parent-done"})
	if err != nil {
		t.Fatalf("exec with a lingering child: %v", err)
	}
	if r.Stdout != "parent-done\n" || r.ExitCode != 0 {
		t.Fatalf("exec = %+v", r)
	}
}

func TestFilesystemEndToEnd(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, func(c *control.SessionConfig) { c.WorkingDir = e.root + "/proj/" })
	ctx := ctxT(t)

	n, err := s.WriteFile(ctx, "/workspace/notes/a.txt", []byte("hello machine"), nil)
	if err != nil || n != 13 {
		t.Fatalf("WriteFile = %d, %v", n, err)
	}
	// The virtual root maps under the working dir on the machine.
	if b, err := os.ReadFile(filepath.Join(e.root, "proj/notes/a.txt")); err != nil || string(b) != "hello machine" {
		t.Fatalf("on disk: %q %v", b, err)
	}
	if b, err := s.ReadFile(ctx, "notes/a.txt", 0); err != nil || string(b) != "hello machine" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	if b, err := s.ReadFile(ctx, "/workspace/notes/a.txt", 5); err != nil || string(b) != "hello" {
		t.Fatalf("ReadFile maxBytes = %q, %v", b, err)
	}
	if _, err := s.WriteFile(ctx, "notes/a.txt", []byte("!"), &control.WriteOptions{Append: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Mkdir(ctx, "/workspace/notes/deep/er", true, 0o750); err != nil {
		t.Fatal(err)
	}
	entries, err := s.ListDir(ctx, "/workspace/notes")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].Name != "a.txt" || entries[0].Type != "file" || entries[1].Name != "deep" || entries[1].Type != "dir" {
		t.Fatalf("ListDir = %+v", entries)
	}
	all, err := s.ListFiles(ctx, "/workspace/notes", true)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, en := range all {
		paths = append(paths, en.GetPath())
	}
	if got := strings.Join(paths, ","); got != "a.txt,deep,deep/er" {
		t.Fatalf("recursive list paths = %s", got)
	}
	st, err := s.Stat(ctx, "/workspace/notes/a.txt")
	if err != nil || !st.GetExists() || st.GetEntry().GetSize() != 14 || st.GetEntry().GetMode()&0o170000 != 0o100000 {
		t.Fatalf("Stat = %v, %v", st, err)
	}
	if ok, err := s.PathExists(ctx, "/workspace/missing"); err != nil || ok {
		t.Fatalf("PathExists(missing) = %v, %v", ok, err)
	}
	if err := s.Move(ctx, "/workspace/notes/a.txt", "/workspace/b.txt", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "/workspace/notes", false); err == nil {
		t.Fatal("removing a non-empty dir without recursive must fail")
	} else if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_OS || ce.Detail["errno"] != strconv.Itoa(int(syscall.ENOTEMPTY)) {
		t.Fatalf("non-recursive remove: %+v", ce)
	}
	if err := s.Remove(ctx, "/workspace/notes", true); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.PathExists(ctx, "/workspace/notes"); ok {
		t.Fatal("recursive remove left the dir")
	}

	// A PNG comes back as an image.
	png := []byte("\x89PNG\r\n\x1a\n....")
	if _, err := s.WriteFile(ctx, "/workspace/img.png", png, nil); err != nil {
		t.Fatal(err)
	}
	img, err := s.ViewImage(ctx, "/workspace/img.png")
	if err != nil || img.MediaType != "image/png" || !bytes.Equal(img.Data, png) {
		t.Fatalf("ViewImage = %+v, %v", img, err)
	}
}

func TestFilesystemErrorsAreTyped(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)

	_, err := s.ReadFile(ctx, "/workspace/nope.txt", 0)
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND || !ce.OSNotFound || ce.AgentOffline {
		t.Fatalf("missing file: %+v", ce)
	}
	os.WriteFile(filepath.Join(e.root, "file"), []byte("x"), 0o644)
	_, err = s.ReadFile(ctx, "file/child", 0)
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_OS || ce.Detail["errno"] != strconv.Itoa(int(syscall.ENOTDIR)) {
		t.Fatalf("ENOTDIR: %+v", ce)
	}
	if os.Geteuid() != 0 {
		secret := filepath.Join(e.root, "secret")
		os.WriteFile(secret, []byte("x"), 0o000)
		_, err = s.ReadFile(ctx, secret, 0)
		if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_OS || ce.Detail["errno"] != strconv.Itoa(int(syscall.EACCES)) {
			t.Fatalf("permission denied: %+v", ce)
		}
	} else {
		t.Log("running as root: EACCES cannot be provoked; ENOTDIR covers the OS-error path")
	}
	err = s.Move(ctx, "/workspace/file", "/workspace/file", false)
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_OS {
		t.Fatalf("move onto an existing path without overwrite: %+v", ce)
	}
}

func TestLargeFilesMoveInChunks(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)
	data := make([]byte, 20<<20+12345)
	rand.Read(data)

	var last int64
	n, err := s.WriteFileAll(ctx, "/workspace/big/blob.bin", bytes.NewReader(data), int64(len(data)),
		&control.TransferOptions{Progress: func(done, total int64) {
			if done < last || total != int64(len(data)) {
				t.Errorf("progress went %d -> %d of %d", last, done, total)
			}
			last = done
		}})
	if err != nil || n != int64(len(data)) || last != n {
		t.Fatalf("WriteFileAll = %d, %v (last progress %d)", n, err, last)
	}
	onDisk, _ := os.ReadFile(filepath.Join(e.root, "big/blob.bin"))
	if sha256.Sum256(onDisk) != sha256.Sum256(data) {
		t.Fatal("uploaded bytes differ")
	}
	if m, _ := filepath.Glob(filepath.Join(e.root, "big", ".*part*")); len(m) != 0 {
		t.Fatalf("part files left behind: %v", m)
	}
	var out bytes.Buffer
	n, err = s.ReadFileAll(ctx, "/workspace/big/blob.bin", &out, nil)
	if err != nil || n != int64(len(data)) || sha256.Sum256(out.Bytes()) != sha256.Sum256(data) {
		t.Fatalf("ReadFileAll = %d, %v", n, err)
	}
	// A single read of the whole file cannot fit 1 MiB: a typed error, not a cut.
	_, err = s.ReadFile(ctx, "/workspace/big/blob.bin", 0)
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE || ce.Retryable {
		t.Fatalf("whole read of 20 MiB: %+v", ce)
	}
}

func TestSmallMaxPayload(t *testing.T) {
	e := newEnv(t, []natstest.Option{natstest.MaxPayload(64 << 10)}, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)

	// Exec output over the payload is capped and the reply says so.
	r, err := s.Exec(ctx, control.ExecOptions{Cmd: "head -c 300000 /dev/zero | tr '\\0' x"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Stdout) >= 300000 || len(r.Stdout) == 0 || !strings.Contains(r.Stderr, "truncated") {
		t.Fatalf("capped exec: stdout %d bytes, stderr %q", len(r.Stdout), r.Stderr)
	}
	// A directory listing too large for a reply is a typed error.
	for i := 0; i < 2000; i++ {
		os.WriteFile(filepath.Join(e.root, "f-"+strings.Repeat("x", 40)+strconv.Itoa(i)), nil, 0o644)
	}
	_, err = s.ListFiles(ctx, "", false)
	if ce := asControlError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE {
		t.Fatalf("huge listing: %+v", ce)
	}
	// Chunked transfers adapt to the small payload.
	data := bytes.Repeat([]byte("0123456789"), 50_000)
	if _, err := s.WriteFileAll(ctx, "/workspace/x.bin", bytes.NewReader(data), -1, nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := s.ReadFileAll(ctx, "/workspace/x.bin", &out, nil); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("chunked read on a 64 KiB server: %v", err)
	}
}

func TestBadInputOverTheWire(t *testing.T) {
	e := newEnv(t, nil, func(o *agent.Options) { o.HeldEpoch = 5 })
	nc := natstest.Connect(t, e.srv)
	subject := control.SubjectFor(testWS, testAgent)
	raw := func(b []byte) *agentpb.ControlResponse {
		t.Helper()
		m, err := nc.Request(subject, b, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r := &agentpb.ControlResponse{}
		if err := proto.Unmarshal(m.Data, r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := raw([]byte{0xff, 0xff, 0xff}); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_PROTOCOL {
		t.Fatalf("undecodable: %v", r)
	}
	empty, _ := proto.Marshal(&agentpb.ControlRequest{RequestId: "e"})
	if r := raw(empty); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_PROTOCOL || r.GetRequestId() != "e" {
		t.Fatalf("empty op: %v", r)
	}
	unknown := protowire.AppendTag(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "u"), 45, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, nil)
	if r := raw(unknown); r.GetError().GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || r.GetRequestId() != "u" {
		t.Fatalf("unknown op: %v", r)
	}

	// A session holding a stale epoch is fenced; the platform's flag says so.
	stale := e.session(t, func(c *control.SessionConfig) { c.Epoch = 4 })
	_, err := stale.Exec(ctxT(t), control.ExecOptions{Cmd: "true"})
	if ce := asControlError(t, err); !ce.Fenced || !ce.Retryable || ce.Code != agentpb.ErrorCode_ERROR_CODE_FENCED {
		t.Fatalf("stale epoch: %+v", ce)
	}
	current := e.session(t, func(c *control.SessionConfig) { c.Epoch = 5 })
	if _, err := current.Exec(ctxT(t), control.ExecOptions{Cmd: "true"}); err != nil {
		t.Fatalf("current epoch: %v", err)
	}
}

func TestSlowExecNeverDelaysPing(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)
	release := filepath.Join(e.root, "release")
	execDone := make(chan error, 1)
	go func() {
		_, err := s.Exec(ctx, control.ExecOptions{Cmd: "while [ ! -e " + release + " ]; do sleep 0.05; done"})
		execDone <- err
	}()
	natstest.Eventually(t, 10*time.Second, func() error {
		if e.agent.Dispatcher().Active() == 0 {
			return errors.New("exec not in flight yet")
		}
		return nil
	})
	// The exec cannot finish until we create the file, so answering these
	// proves ops are concurrent.
	for i := 0; i < 5; i++ {
		if !s.Ping(ctx) {
			t.Fatal("ping not answered while an exec runs")
		}
	}
	if _, err := s.Metrics(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-execDone:
		t.Fatalf("exec finished early: %v", err)
	default:
	}
	os.WriteFile(release, nil, 0o644)
	if err := <-execDone; err != nil {
		t.Fatal(err)
	}
}

func TestOfflineAndBackOnTheSameSession(t *testing.T) {
	e := newEnv(t, nil, nil)
	s := e.session(t, nil)
	ctx := ctxT(t)
	if _, err := s.Exec(ctx, control.ExecOptions{Cmd: "true"}); err != nil {
		t.Fatal(err)
	}
	e.stopAgent(t)
	natstest.Eventually(t, 5*time.Second, func() error {
		_, err := s.Exec(ctx, control.ExecOptions{Cmd: "true"})
		var ce *control.Error
		if errors.As(err, &ce) && ce.AgentOffline && ce.Reason == control.ReasonAgentOffline && !ce.OSNotFound {
			return nil
		}
		return errors.New("not offline yet")
	})
	e.startAgent(t, nil)
	natstest.Eventually(t, 5*time.Second, func() error {
		_, err := s.Exec(ctx, control.ExecOptions{Cmd: "true"})
		return err
	})

	// Another workspace never reaches this machine.
	other := e.session(t, func(c *control.SessionConfig) { c.WorkspaceID = "22222222-2222-2222-2222-222222222222" })
	if other.Subject() == s.Subject() {
		t.Fatal("subjects must be workspace scoped")
	}
	_, err := other.Exec(ctx, control.ExecOptions{Cmd: "true"})
	if ce := asControlError(t, err); !ce.AgentOffline {
		t.Fatalf("other workspace: %+v", ce)
	}
}

func TestHelloAnnouncesCapabilities(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	hellos := make(chan *nats.Msg, 4)
	if _, err := nc.ChanSubscribe("agent."+testWS+"."+testAgent+".hello", hellos); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	e := &env{srv: srv, root: t.TempDir()}
	e.startAgent(t, nil)
	select {
	case m := <-hellos:
		h := &agentpb.Hello{}
		if err := proto.Unmarshal(m.Data, h); err != nil {
			t.Fatal(err)
		}
		c := h.GetCapabilities()
		if !c.GetExec() || !c.GetFilesystem() {
			t.Fatalf("capabilities = %v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no hello")
	}
}
