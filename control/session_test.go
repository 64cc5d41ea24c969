package control

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *control.Error, got %T %v", err, err)
	}
	return ce
}

// §8 check 1.
func TestSubjectFor(t *testing.T) {
	if got, want := SubjectFor(testWS, testAgent), "agent."+testWS+".agent-abc.rpc"; got != want {
		t.Fatalf("SubjectFor = %q, want %q", got, want)
	}
}

// §8 checks 2-4, 9-10 and the session structure.
func TestSessionStructural(t *testing.T) {
	mock := newMock("vm-1")
	f := newFixture(t, mock)
	s := f.session(t)
	ctx := ctxT(t)

	t.Run("exec echo", func(t *testing.T) { // 2
		r, err := s.Exec(ctx, ExecOptions{Cmd: "echo hi"})
		if err != nil {
			t.Fatal(err)
		}
		if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) != "echo hi" || r.Output != r.Stdout {
			t.Fatalf("exec = %+v", r)
		}
		first := mock.requests()[0]
		if first.subject != s.Subject() || first.req.GetExec() == nil {
			t.Fatalf("first request = %s %v", first.subject, first.req)
		}
		e := first.req.GetExec()
		if !e.GetShell() || len(e.GetCommand()) != 1 || e.GetCommand()[0] != "echo hi" || len(e.GetEnv()) != 0 || len(e.GetStdin()) != 0 || e.GetTimeoutMs() != 0 {
			t.Fatalf("exec request = %v", e)
		}
	})
	t.Run("exec hostname", func(t *testing.T) { // 3
		mock.mu.Lock()
		mock.hostname = "the-vm"
		mock.mu.Unlock()
		out, err := s.ExecCommand(ctx, "echo $HOSTNAME", "")
		if err != nil || strings.TrimSpace(out) != "the-vm" {
			t.Fatalf("ExecCommand = %q, %v", out, err)
		}
	})
	t.Run("write read", func(t *testing.T) { // 4
		n, err := s.WriteFile(ctx, "/tmp/marker", []byte("hello machine"), nil)
		if err != nil || n != 13 {
			t.Fatalf("WriteFile = %d, %v", n, err)
		}
		if w := mock.last().GetFsWrite(); !w.GetCreateParents() || w.GetAppend() || w.GetMode() != 0 {
			t.Fatalf("write request = %v", w)
		}
		b, err := s.ReadFile(ctx, "/tmp/marker", 0)
		if err != nil || string(b) != "hello machine" || mock.fileText("/tmp/marker") != "hello machine" {
			t.Fatalf("ReadFile = %q, %v", b, err)
		}
		if r := mock.last().GetFsRead(); r.GetOffset() != 0 || r.GetLength() != 0 {
			t.Fatalf("read request = %v", r)
		}
		if _, err := s.ReadFile(ctx, "/tmp/marker", 5); err != nil || mock.last().GetFsRead().GetLength() != 5 {
			t.Fatalf("ReadFile maxBytes: %v %v", err, mock.last())
		}
	})
	t.Run("ping", func(t *testing.T) { // 9
		if !s.Ping(ctx) {
			t.Fatal("ping on a live mock = false")
		}
		if n := mock.last().GetPing().GetNonce(); n >= 1<<53 {
			t.Fatalf("nonce %d out of [0, 2^53)", n)
		}
		mock.setOnline(false)
		defer mock.setOnline(true)
		if s.Ping(ctx) {
			t.Fatal("ping on an offline mock = true")
		}
	})
	t.Run("epoch", func(t *testing.T) { // 10
		s7 := f.session(t, func(c *SessionConfig) { c.Epoch = 7 })
		if _, err := s7.Exec(ctx, ExecOptions{Cmd: "true"}); err != nil {
			t.Fatal(err)
		}
		if got := mock.last().GetEpoch(); got != 7 {
			t.Fatalf("epoch = %d", got)
		}
	})
	t.Run("request ids are fresh uuids", func(t *testing.T) {
		seen := map[string]bool{}
		for _, r := range mock.requests() {
			id := r.req.GetRequestId()
			if len(id) != 36 || id[14] != '4' || seen[id] {
				t.Fatalf("request id %q (dup=%v)", id, seen[id])
			}
			seen[id] = true
		}
	})
}

// §8 checks 11-14, 38-44 as Go properties.
func TestSessionState(t *testing.T) {
	rpc := NewNATSRPC(nil)
	env := map[string]string{"HOME": "/home/u", "FOO": "bar"}
	s, err := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: rpc, Environment: env})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Environment(); !maps.Equal(got, env) { // 12
		t.Fatalf("Environment = %v", got)
	}
	s.Environment()["X"] = "y" // a copy: the session is not mutated
	env["FOO"] = "changed"     // nor by the caller's map
	if got := s.Environment(); len(got) != 2 || got["FOO"] != "bar" {
		t.Fatalf("Environment leaked a mutation: %v", got)
	}
	bare, _ := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: rpc})
	if got := bare.Environment(); got == nil || len(got) != 0 {
		t.Fatalf("no env: Environment = %#v, want empty non-nil", got)
	}
	if got := s.SerializeState(); len(got) != 1 || got["agentId"] != testAgent { // 14, 41, 44
		t.Fatalf("SerializeState = %v", got)
	}
	if s.AgentID() != testAgent || s.WorkspaceID() != testWS || BackendID != "selfhosted" { // 38, 39
		t.Fatal("identity")
	}
	if s.SupportsPty() {
		t.Fatal("SupportsPty = true")
	}
	if s.timeout != DefaultTimeout || DefaultTimeout != 30*time.Second {
		t.Fatalf("default timeout = %v", s.timeout)
	}
	for _, bad := range []SessionConfig{
		{AgentID: testAgent, RPC: rpc},
		{WorkspaceID: testWS, RPC: rpc}, // 40: no agent id bound
		{WorkspaceID: testWS, AgentID: testAgent},
	} {
		if _, err := NewSession(bad); err == nil {
			t.Fatalf("NewSession(%+v) succeeded", bad)
		}
	}
}

// §8 check 5 and 35.
func TestSessionErrors(t *testing.T) {
	f, s, ctx := sessionFixture(t)
	mock := f.mock

	_, err := s.ReadFile(ctx, "/nope", 0)
	ce := asError(t, err)
	if ce.Code != agentpb.ErrorCode_ERROR_CODE_NOT_FOUND || !ce.OSNotFound || ce.AgentOffline || IsProviderNotFound(err) {
		t.Fatalf("missing file = %+v", ce)
	}
	if ce.RequestID == "" || ce.RequestID != mock.last().GetRequestId() {
		t.Fatalf("RequestID = %q", ce.RequestID)
	}

	mock.setOnline(false)
	_, err = s.Exec(ctx, ExecOptions{Cmd: "echo"})
	ce = asError(t, err)
	if ce.Reason != ReasonAgentOffline || !ce.AgentOffline || ce.OSNotFound || ce.Retryable || IsProviderNotFound(err) {
		t.Fatalf("offline = %+v", ce)
	}
	mock.setOnline(true)

	mock.mu.Lock()
	mock.draining = true
	mock.mu.Unlock()
	_, err = s.Stat(ctx, "/x")
	if ce := asError(t, err); !ce.Draining || !ce.Retryable || ce.Reason != ReasonNone {
		t.Fatalf("draining = %+v", ce)
	}
	mock.mu.Lock()
	mock.draining = false
	mock.mu.Unlock()

	// An op the agent does not implement.
	err = s.DesktopInput(ctx, &agentpb.DesktopInputRequest{})
	if ce := asError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("unsupported = %+v", ce)
	}
}

// The §1.3 envelope: AgentError → *Error; no error and no result → PROTOCOL;
// a wrong result case → a plain error; a transport error passes through.
func TestSessionEnvelope(t *testing.T) {
	ctx := context.Background()
	boom := errors.New("boom")
	tests := []struct {
		name  string
		reply *agentpb.ControlResponse
		err   error
		check func(t *testing.T, err error)
	}{
		{"empty response", &agentpb.ControlResponse{}, nil, func(t *testing.T, err error) {
			ce := asError(t, err)
			if ce.Code != agentpb.ErrorCode_ERROR_CODE_PROTOCOL || ce.Message != "agent returned an empty control response" || ce.Retryable {
				t.Fatalf("%+v", ce)
			}
		}},
		{"nil response", nil, nil, func(t *testing.T, err error) {
			if ce := asError(t, err); ce.Code != agentpb.ErrorCode_ERROR_CODE_PROTOCOL {
				t.Fatalf("%+v", ce)
			}
		}},
		{"wrong case", &agentpb.ControlResponse{Result: &agentpb.ControlResponse_FsWrite{FsWrite: &agentpb.FsWriteResponse{}}}, nil, func(t *testing.T, err error) {
			var ce *Error
			if errors.As(err, &ce) || err == nil || err.Error() != "selfhosted readFile: unexpected result fsWrite" {
				t.Fatalf("err = %v", err)
			}
		}},
		{"agent error", &agentpb.ControlResponse{Error: &agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_FENCED}}, nil, func(t *testing.T, err error) {
			ce := asError(t, err)
			if !ce.Fenced || ce.Message != "agent error (10)" || !strings.Contains(strings.ToLower(ce.Error()), "fenced") {
				t.Fatalf("%+v %q", ce, ce.Error())
			}
		}},
		{"transport error", nil, boom, func(t *testing.T, err error) {
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rpc := RPCFunc(func(_ context.Context, _ string, req *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error) {
				if timeout != DefaultTimeout {
					t.Errorf("timeout = %v", timeout)
				}
				return tc.reply, tc.err
			})
			s, _ := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: rpc})
			_, err := s.ReadFile(ctx, "/x", 0)
			tc.check(t, err)
		})
	}

	// Ping never fails; it is true only for a ping result.
	for _, reply := range []*agentpb.ControlResponse{
		{},
		{Result: &agentpb.ControlResponse_Exec{Exec: &agentpb.ExecResponse{}}},
		OfflineResponse("x"),
	} {
		s, _ := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: RPCFunc(
			func(context.Context, string, *agentpb.ControlRequest, time.Duration) (*agentpb.ControlResponse, error) {
				return reply, nil
			})})
		if s.Ping(ctx) {
			t.Fatalf("Ping with reply %v = true", reply)
		}
	}
}

// §8 checks 15-26: the virtual root on the wire.
func TestSessionPathsOnTheWire(t *testing.T) {
	mock := newMock("")
	f := newFixture(t, mock)
	ctx := ctxT(t)

	t.Run("exec cwd", func(t *testing.T) { // 15-19
		s := f.session(t)
		for _, tc := range []struct{ workdir, want string }{
			{"/workspace", ""},
			{"/workspace/sub/dir", "sub/dir"},
			{"", ""},
			{"/tmp", "/tmp"},
			{"/workspaceX", "/workspaceX"},
		} {
			if _, err := s.Exec(ctx, ExecOptions{Cmd: "pwd", Workdir: tc.workdir}); err != nil {
				t.Fatal(err)
			}
			if got := mock.last().GetExec().GetCwd(); got != tc.want {
				t.Errorf("workdir %q: wire cwd %q, want %q", tc.workdir, got, tc.want)
			}
		}
	})
	t.Run("fs paths", func(t *testing.T) { // 20
		s := f.session(t)
		if _, err := s.WriteFile(ctx, "/workspace/notes.md", []byte("hi"), nil); err != nil {
			t.Fatal(err)
		}
		if got := mock.last().GetFsWrite().GetPath(); got != "notes.md" {
			t.Fatalf("write path %q", got)
		}
		b, err := s.ReadFile(ctx, "/workspace/notes.md", 0)
		if err != nil || string(b) != "hi" || mock.last().GetFsRead().GetPath() != "notes.md" {
			t.Fatalf("read %q %v %v", b, err, mock.last())
		}
	})
	t.Run("working dir", func(t *testing.T) { // 25, 26
		s := f.session(t, func(c *SessionConfig) { c.WorkingDir = "/home/u/proj" })
		for _, tc := range []struct{ in, want string }{
			{"/workspace/sub/file.txt", "/home/u/proj/sub/file.txt"},
			{"/workspace/notes.md", "/home/u/proj/notes.md"},
		} {
			if _, err := s.WriteFile(ctx, tc.in, []byte("x"), nil); err != nil {
				t.Fatal(err)
			}
			if got := mock.last().GetFsWrite().GetPath(); got != tc.want {
				t.Errorf("%s: wire %q, want %q", tc.in, got, tc.want)
			}
		}
		// Every fs op maps its paths.
		ops := []struct {
			name string
			do   func() error
			got  func(*agentpb.ControlRequest) []string
			want []string
		}{
			{"stat", func() error { _, err := s.Stat(ctx, "/workspace/a"); return err },
				func(r *agentpb.ControlRequest) []string { return []string{r.GetFsStat().GetPath()} }, []string{"/home/u/proj/a"}},
			{"list", func() error { _, err := s.ListFiles(ctx, "/workspace", true); return err },
				func(r *agentpb.ControlRequest) []string { return []string{r.GetFsList().GetPath()} }, []string{"/home/u/proj"}},
			{"mkdir", func() error { return s.Mkdir(ctx, "d", true, 0o755) },
				func(r *agentpb.ControlRequest) []string { return []string{r.GetFsMkdir().GetPath()} }, []string{"/home/u/proj/d"}},
			{"move", func() error { return s.Move(ctx, "/workspace/notes.md", "/tmp/n.md", false) },
				func(r *agentpb.ControlRequest) []string {
					return []string{r.GetFsMove().GetFrom(), r.GetFsMove().GetTo()}
				}, []string{"/home/u/proj/notes.md", "/tmp/n.md"}},
			{"remove", func() error { return s.Remove(ctx, "/workspace/sub/file.txt", false) },
				func(r *agentpb.ControlRequest) []string { return []string{r.GetFsRemove().GetPath()} }, []string{"/home/u/proj/sub/file.txt"}},
			{"exec", func() error { _, err := s.Exec(ctx, ExecOptions{Cmd: "ls"}); return err },
				func(r *agentpb.ControlRequest) []string { return []string{r.GetExec().GetCwd()} }, []string{"/home/u/proj"}},
		}
		for _, op := range ops {
			if err := op.do(); err != nil {
				t.Fatalf("%s: %v", op.name, err)
			}
			if got := op.got(mock.last()); strings.Join(got, ",") != strings.Join(op.want, ",") {
				t.Errorf("%s: wire %v, want %v", op.name, got, op.want)
			}
		}
		if _, err := s.ReadFile(ctx, "/tmp/n.md", 0); err != nil {
			t.Fatalf("moved file: %v", err)
		}
	})
}

// §8 checks 21-24 and the §1.2 rules.
func TestMachinePath(t *testing.T) {
	tests := []struct{ p, wd, want string }{
		{"/workspace", "", ""},
		{"/workspace/sub", "", "sub"},
		{"", "", ""},
		{"/workspace", "/home/u/proj", "/home/u/proj"},
		{"/workspace/sub", "/home/u/proj", "/home/u/proj/sub"},
		{"/workspace", "proj", "proj"},
		{"/workspace/sub", "proj", "proj/sub"},
		{"/workspace", "/home/u/proj/", "/home/u/proj"},
		{"/workspace/sub", "/home/u/proj/", "/home/u/proj/sub"},
		{"/workspace", "proj/", "proj"},
		{"/workspace/sub", "proj/", "proj/sub"},
		{"/workspace/sub", "proj//", "proj//sub"}, // only one trailing slash goes
		{"/tmp", "/home/u/proj", "/tmp"},
		{"/workspaceX", "/home/u/proj", "/workspaceX"},
		{"rel/a", "/home/u/proj", "/home/u/proj/rel/a"},
		{"rel/a", "", "rel/a"},
		{"", "/home/u/proj", "/home/u/proj"},
		{"/workspace/", "", ""},
	}
	for _, tc := range tests {
		if got := MachinePath(tc.p, tc.wd); got != tc.want {
			t.Errorf("MachinePath(%q, %q) = %q, want %q", tc.p, tc.wd, got, tc.want)
		}
	}
}

// §8 checks 27-34.
func TestFromAgentError(t *testing.T) {
	tests := []struct {
		code      agentpb.ErrorCode
		retryable bool // as sent
		want      Error
	}{
		{agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE, true, Error{Reason: ReasonAgentOffline, Retryable: false, AgentOffline: true}},
		{agentpb.ErrorCode_ERROR_CODE_TIMEOUT, false, Error{Reason: ReasonAgentReconnecting, Retryable: true}},
		{agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED, true, Error{Reason: ReasonConsentRequired}},
		{agentpb.ErrorCode_ERROR_CODE_DRAINING, false, Error{Retryable: true, Draining: true}},
		{agentpb.ErrorCode_ERROR_CODE_FENCED, false, Error{Retryable: true, Fenced: true}},
		{agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, false, Error{OSNotFound: true}},
		{agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, true, Error{OSNotFound: true, Retryable: true}},
		{agentpb.ErrorCode_ERROR_CODE_OS, true, Error{Retryable: true}},
		{agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, false, Error{}},
		{agentpb.ErrorCode_ERROR_CODE_STREAM, true, Error{Retryable: true}},
		{agentpb.ErrorCode_ERROR_CODE_PROTOCOL, false, Error{}},
		{agentpb.ErrorCode_ERROR_CODE_UNSPECIFIED, false, Error{}},
		{agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, false, Error{PayloadTooLarge: true}},
		{agentpb.ErrorCode(42), true, Error{Retryable: true}},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			e := FromAgentError(&agentpb.AgentError{Code: tc.code, Message: "m", Retryable: tc.retryable, Detail: map[string]string{"k": "v"}})
			want := tc.want
			want.Code, want.Message = tc.code, "m"
			if e.Code != want.Code || e.Reason != want.Reason || e.Retryable != want.Retryable ||
				e.Fenced != want.Fenced || e.Draining != want.Draining || e.AgentOffline != want.AgentOffline ||
				e.OSNotFound != want.OSNotFound || e.PayloadTooLarge != want.PayloadTooLarge || e.Message != "m" || e.Detail["k"] != "v" {
				t.Fatalf("got %+v, want %+v", *e, want)
			}
			if IsProviderNotFound(e) {
				t.Fatal("IsProviderNotFound = true")
			}
		})
	}
	if FromAgentError(nil) != nil {
		t.Fatal("FromAgentError(nil) != nil")
	}
	e := FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_OS})
	if e.Message != "agent error (2)" || e.Detail == nil {
		t.Fatalf("defaults: %+v", e)
	}
	if got := e.Error(); got != "selfhosted OS: agent error (2)" {
		t.Fatalf("Error() = %q", got)
	}
	if got := FromAgentError(OfflineResponse("x").GetError()).Error(); got != "selfhosted AGENT_OFFLINE (agent_offline): no agent responded (offline)" {
		t.Fatalf("Error() = %q", got)
	}

	// 33, 34.
	off := OfflineResponse("req-1")
	if off.GetRequestId() != "req-1" || off.GetError().GetMessage() != OfflineMessage || off.GetError().GetRetryable() {
		t.Fatalf("OfflineResponse = %v", off)
	}
	if e := FromAgentError(off.GetError()); e.Reason != ReasonAgentOffline || !e.AgentOffline {
		t.Fatalf("offline → %+v", e)
	}
	to := TimeoutResponse("req-2")
	if to.GetRequestId() != "req-2" || to.GetError().GetMessage() != TimeoutMessage || !to.GetError().GetRetryable() {
		t.Fatalf("TimeoutResponse = %v", to)
	}
	if e := FromAgentError(to.GetError()); e.Reason != ReasonAgentReconnecting || !e.Retryable {
		t.Fatalf("timeout → %+v", e)
	}
}

// §8 check 36 for our backend: nothing is ever a provider NotFound.
func TestIsProviderNotFound(t *testing.T) {
	for _, err := range []error{
		nil,
		errors.New("sandbox not found"),
		errors.New("box no longer running"),
		errors.New("has been terminated"),
		FromAgentError(OfflineResponse("").GetError()),
		&Error{Code: agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, OSNotFound: true},
	} {
		if IsProviderNotFound(err) {
			t.Fatalf("IsProviderNotFound(%v) = true", err)
		}
	}
}

// The turn-level properties (selfhosted-turn checks 5-6) and the remaining
// ops.
func TestSessionFilesAndMachine(t *testing.T) {
	f, s, ctx := sessionFixture(t)
	mock := f.mock

	if _, err := s.WriteFile(ctx, "/workspace/a.txt", []byte("a"), nil); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{"/workspace/a.txt": true, "/workspace/missing.txt": false} {
		if ok, err := s.PathExists(ctx, path); err != nil || ok != want {
			t.Fatalf("PathExists(%s) = %v, %v", path, ok, err)
		}
	}
	st, err := s.Stat(ctx, "/workspace/a.txt")
	if err != nil || !st.GetExists() || st.GetEntry().GetSize() != 1 {
		t.Fatalf("Stat = %v, %v", st, err)
	}
	entries, err := s.ListDir(ctx, "/workspace")
	if err != nil || len(entries) != 1 || entries[0] != (DirEntry{Name: "a.txt", Path: "a.txt", Type: EntryFile}) {
		t.Fatalf("ListDir = %+v, %v", entries, err)
	}

	png := []byte{0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3}
	if _, err := s.WriteFile(ctx, "/workspace/img.png", png, nil); err != nil {
		t.Fatal(err)
	}
	img, err := s.ViewImage(ctx, "/workspace/img.png")
	if err != nil || img.MediaType != "image/png" || img.Data[0] != 0x89 || len(img.Data) != len(png) {
		t.Fatalf("ViewImage = %+v, %v", img, err)
	}
	_, err = s.ViewImage(ctx, "/workspace/a.txt")
	if err == nil || err.Error() != "selfhosted view_image: unsupported image format for /workspace/a.txt" {
		t.Fatalf("ViewImage(text) = %v", err)
	}

	m, err := s.Metrics(ctx)
	if err != nil || m.GetCpuPercent() != 12.5 {
		t.Fatalf("Metrics = %v, %v", m, err)
	}

	mock.exec = func(r *agentpb.ExecRequest) *agentpb.ExecResponse {
		return &agentpb.ExecResponse{ExitCode: 3, Stdout: []byte(strings.Join(r.GetCommand(), "|")), Stderr: r.GetStdin()}
	}
	r, err := s.ExecArgs(ctx, ExecRequestOptions{Argv: []string{"cat", "-"}, Workdir: "/workspace/x", Env: map[string]string{"A": "1"}, Stdin: []byte("in"), Timeout: 40 * time.Second})
	if err != nil || r.GetExitCode() != 3 || string(r.GetStdout()) != "cat|-" || string(r.GetStderr()) != "in" {
		t.Fatalf("ExecArgs = %v, %v", r, err)
	}
	if e := mock.last().GetExec(); e.GetShell() || e.GetCwd() != "x" || e.GetEnv()["A"] != "1" || e.GetTimeoutMs() != 40000 {
		t.Fatalf("ExecArgs request = %v", e)
	}
	res, err := s.Exec(ctx, ExecOptions{Cmd: "false"})
	if err != nil || res.ExitCode != 3 {
		t.Fatalf("non-zero exit is not an error: %+v %v", res, err)
	}
}

// ExecArgs stretches the round trip past the command's own deadline.
func TestExecArgsTimeout(t *testing.T) {
	var got time.Duration
	s, _ := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, Timeout: 10 * time.Second, RPC: RPCFunc(
		func(_ context.Context, _ string, _ *agentpb.ControlRequest, timeout time.Duration) (*agentpb.ControlResponse, error) {
			got = timeout
			return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_Exec{Exec: &agentpb.ExecResponse{}}}, nil
		})})
	for _, tc := range []struct{ exec, want time.Duration }{
		{0, 10 * time.Second},
		{time.Second, 10 * time.Second},
		{time.Minute, time.Minute + 5*time.Second},
	} {
		if _, err := s.ExecArgs(context.Background(), ExecRequestOptions{Argv: []string{"x"}, Timeout: tc.exec}); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("exec timeout %v: request timeout %v, want %v", tc.exec, got, tc.want)
		}
	}
}

func TestScreenshotNativeFallback(t *testing.T) {
	for _, tc := range []struct {
		in     *agentpb.DesktopScreenshotResponse
		nw, nh uint32
	}{
		{&agentpb.DesktopScreenshotResponse{Width: 800, Height: 600}, 800, 600},
		{&agentpb.DesktopScreenshotResponse{Width: 800, Height: 600, NativeWidth: 1600, NativeHeight: 1200}, 1600, 1200},
	} {
		s, _ := NewSession(SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: RPCFunc(
			func(context.Context, string, *agentpb.ControlRequest, time.Duration) (*agentpb.ControlResponse, error) {
				return &agentpb.ControlResponse{Result: &agentpb.ControlResponse_DesktopScreenshot{DesktopScreenshot: tc.in}}, nil
			})})
		sc, err := s.Screenshot(context.Background())
		if err != nil || sc.NativeWidth != tc.nw || sc.NativeHeight != tc.nh || sc.Width != tc.in.Width {
			t.Fatalf("Screenshot = %+v, %v", sc, err)
		}
	}
}
