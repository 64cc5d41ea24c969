package control

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// mockAgent answers ControlRequests the way control.md §5's
// MockAgentResponder does, plus what the chunked helpers need from a
// conforming agent (agent.md §5): ranged reads, appends, mkdir, move with the
// overwrite guard, remove. Keys are normalized: trailing slashes stripped, a
// leading "/" forced, so "app.txt" and "/app.txt" are one file.
type mockAgent struct {
	mu        sync.Mutex
	online    bool
	draining  bool
	hostname  string
	files     map[string][]byte
	exec      func(*agentpb.ExecRequest) *agentpb.ExecResponse
	intercept func(*agentpb.ControlRequest) *agentpb.ControlResponse // non-nil reply wins
	recorded  []recordedRequest
}

type recordedRequest struct {
	subject string
	req     *agentpb.ControlRequest
}

func newMock(hostname string) *mockAgent {
	if hostname == "" {
		hostname = "mock-machine"
	}
	return &mockAgent{online: true, hostname: hostname, files: map[string][]byte{}}
}

func normKey(p string) string {
	p = strings.TrimRight(p, "/")
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

func (m *mockAgent) setOnline(v bool) { m.mu.Lock(); m.online = v; m.mu.Unlock() }

func (m *mockAgent) setIntercept(f func(*agentpb.ControlRequest) *agentpb.ControlResponse) {
	m.mu.Lock()
	m.intercept = f
	m.mu.Unlock()
}

func (m *mockAgent) seed(path string, content []byte) {
	m.mu.Lock()
	m.files[normKey(path)] = slices.Clone(content)
	m.mu.Unlock()
}

func (m *mockAgent) file(path string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[normKey(path)]
	return slices.Clone(b), ok
}

func (m *mockAgent) fileText(path string) string { b, _ := m.file(path); return string(b) }

func (m *mockAgent) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.files))
}

func (m *mockAgent) requests() []recordedRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.recorded)
}

func (m *mockAgent) last() *agentpb.ControlRequest {
	r := m.requests()
	if len(r) == 0 {
		return nil
	}
	return r[len(r)-1].req
}

func agentErr(id string, code agentpb.ErrorCode, msg string, retryable bool) *agentpb.ControlResponse {
	return &agentpb.ControlResponse{RequestId: id, Error: &agentpb.AgentError{Code: code, Message: msg, Retryable: retryable}}
}

// handle answers one request (and records it).
func (m *mockAgent) handle(subject string, req *agentpb.ControlRequest) *agentpb.ControlResponse {
	m.mu.Lock()
	m.recorded = append(m.recorded, recordedRequest{subject, req})
	intercept := m.intercept
	m.mu.Unlock()
	if intercept != nil {
		if resp := intercept(req); resp != nil {
			resp.RequestId = req.GetRequestId()
			return resp
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	id := req.GetRequestId()
	if !m.online {
		return agentErr(id, agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE, "the enrolled agent is offline", false)
	}
	if m.draining {
		return agentErr(id, agentpb.ErrorCode_ERROR_CODE_DRAINING, "the agent is draining", true)
	}
	resp := &agentpb.ControlResponse{RequestId: id}
	switch op := req.GetOp().(type) {
	case nil:
		return agentErr(id, agentpb.ErrorCode_ERROR_CODE_PROTOCOL, "empty op", false)
	case *agentpb.ControlRequest_Ping:
		resp.Result = &agentpb.ControlResponse_Ping{Ping: &agentpb.PingResponse{Nonce: op.Ping.GetNonce()}}
	case *agentpb.ControlRequest_Exec:
		var r *agentpb.ExecResponse
		if m.exec != nil {
			r = m.exec(op.Exec)
		} else {
			text := strings.Join(op.Exec.GetCommand(), " ")
			out := text + "\n"
			if strings.Contains(text, "hostname") || strings.Contains(text, "HOSTNAME") {
				out = m.hostname + "\n"
			}
			r = &agentpb.ExecResponse{Stdout: []byte(out), DurationMs: 1}
		}
		resp.Result = &agentpb.ControlResponse_Exec{Exec: r}
	case *agentpb.ControlRequest_FsRead:
		p := op.FsRead.GetPath()
		b, ok := m.files[normKey(p)]
		if !ok {
			return agentErr(id, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "no such file: "+p, false)
		}
		off, n := op.FsRead.GetOffset(), op.FsRead.GetLength()
		start := min(off, uint64(len(b)))
		end := uint64(len(b))
		if n != 0 {
			end = min(start+n, end)
		}
		resp.Result = &agentpb.ControlResponse_FsRead{FsRead: &agentpb.FsReadResponse{
			Content: slices.Clone(b[start:end]), TotalSize: uint64(len(b))}}
	case *agentpb.ControlRequest_FsWrite:
		k := normKey(op.FsWrite.GetPath())
		c := op.FsWrite.GetContent()
		if op.FsWrite.GetAppend() {
			m.files[k] = append(m.files[k], c...)
		} else {
			m.files[k] = slices.Clone(c)
		}
		resp.Result = &agentpb.ControlResponse_FsWrite{FsWrite: &agentpb.FsWriteResponse{BytesWritten: uint64(len(c))}}
	case *agentpb.ControlRequest_FsList:
		dir := normKey(op.FsList.GetPath())
		prefix := dir + "/"
		if dir == "/" {
			prefix = "/"
		}
		var entries []*agentpb.FsEntry
		for _, k := range slices.Sorted(maps.Keys(m.files)) {
			if rel, ok := strings.CutPrefix(k, prefix); ok {
				entries = append(entries, &agentpb.FsEntry{
					Name: k[strings.LastIndexByte(k, '/')+1:], Path: rel,
					Kind: agentpb.FsEntryKind_FS_ENTRY_KIND_FILE, Size: uint64(len(m.files[k])), Mode: 0o644,
				})
			}
		}
		resp.Result = &agentpb.ControlResponse_FsList{FsList: &agentpb.FsListResponse{Entries: entries}}
	case *agentpb.ControlRequest_FsStat:
		p := op.FsStat.GetPath()
		st := &agentpb.FsStatResponse{}
		if b, ok := m.files[normKey(p)]; ok {
			k := normKey(p)
			st = &agentpb.FsStatResponse{Exists: true, Entry: &agentpb.FsEntry{
				Name: k[strings.LastIndexByte(k, '/')+1:], Path: p,
				Kind: agentpb.FsEntryKind_FS_ENTRY_KIND_FILE, Size: uint64(len(b)), Mode: 0o644,
			}}
		}
		resp.Result = &agentpb.ControlResponse_FsStat{FsStat: st}
	case *agentpb.ControlRequest_FsMkdir:
		resp.Result = &agentpb.ControlResponse_FsMkdir{FsMkdir: &agentpb.FsMkdirResponse{}}
	case *agentpb.ControlRequest_FsMove:
		from, to := normKey(op.FsMove.GetFrom()), normKey(op.FsMove.GetTo())
		b, ok := m.files[from]
		if !ok {
			return agentErr(id, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "move: no such file: "+op.FsMove.GetFrom(), false)
		}
		if _, exists := m.files[to]; exists && !op.FsMove.GetOverwrite() {
			return agentErr(id, agentpb.ErrorCode_ERROR_CODE_OS, "move: destination exists: "+op.FsMove.GetTo(), false)
		}
		delete(m.files, from)
		m.files[to] = b
		resp.Result = &agentpb.ControlResponse_FsMove{FsMove: &agentpb.FsMoveResponse{}}
	case *agentpb.ControlRequest_FsRemove:
		k := normKey(op.FsRemove.GetPath())
		if _, ok := m.files[k]; !ok {
			return agentErr(id, agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "remove: no such file: "+op.FsRemove.GetPath(), false)
		}
		delete(m.files, k)
		resp.Result = &agentpb.ControlResponse_FsRemove{FsRemove: &agentpb.FsRemoveResponse{}}
	case *agentpb.ControlRequest_DesktopEnsure:
		resp.Result = &agentpb.ControlResponse_DesktopEnsure{DesktopEnsure: &agentpb.DesktopEnsureResponse{
			Channel: &agentpb.StreamChannel{ChannelId: "mock-desktop", Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: 6080},
			Display: &agentpb.Display{Id: ":99", Width: 1024, Height: 768, Virtual: true},
		}}
	case *agentpb.ControlRequest_PtyOpen:
		resp.Result = &agentpb.ControlResponse_PtyOpen{PtyOpen: &agentpb.PtyOpenResponse{
			PtyId:   "mock-pty",
			Channel: &agentpb.StreamChannel{ChannelId: "mock-pty", Kind: agentpb.StreamKind_STREAM_KIND_PTY, Port: 7681},
		}}
	case *agentpb.ControlRequest_Metrics:
		resp.Result = &agentpb.ControlResponse_Metrics{Metrics: &agentpb.MetricsSample{CpuPercent: 12.5, MemTotalBytes: 1 << 30}}
	default:
		return agentErr(id, agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED, "mock does not implement "+opLabel(req), false)
	}
	return resp
}

// serve answers requests on subject over nc, each in its own goroutine (so
// concurrent requests overlap, like the real agent). Like the bus responder
// of the reference it ignores messages without a reply subject, and like a
// conforming agent it answers PAYLOAD_TOO_LARGE for a reply over nc's max
// payload.
func (m *mockAgent) serve(tb testing.TB, nc *nats.Conn, subject string) *nats.Subscription {
	tb.Helper()
	sub, err := nc.Subscribe(subject, func(msg *nats.Msg) {
		if msg.Reply == "" {
			return
		}
		serve := func() {
			req := new(agentpb.ControlRequest)
			var resp *agentpb.ControlResponse
			if err := proto.Unmarshal(msg.Data, req); err != nil {
				resp = agentErr("", agentpb.ErrorCode_ERROR_CODE_PROTOCOL, "bad request", false)
			} else {
				resp = m.handle(msg.Subject, req)
			}
			data, _ := proto.Marshal(resp)
			if mp := nc.MaxPayload(); mp > 0 && int64(len(data)) > mp {
				data, _ = proto.Marshal(agentErr(req.GetRequestId(), agentpb.ErrorCode_ERROR_CODE_PAYLOAD_TOO_LARGE, "reply too large", false))
			}
			_ = msg.Respond(data)
		}
		// Like a conforming agent, writes apply in arrival order (served on
		// the delivery goroutine); everything else runs concurrently.
		if isWrite(msg.Data) {
			serve()
			return
		}
		go serve()
	})
	if err != nil {
		tb.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush: %v", err)
	}
	return sub
}

// Fixtures of control.md §8.
const (
	testWS    = "11111111-1111-1111-1111-111111111111"
	testAgent = "agent-abc"
)

func testRelay() RelayConfig {
	yes := true
	return RelayConfig{Host: "relay.test", Port: 443, TLS: &yes}
}

// fixture is a real nats-server, an agent connection serving the mock, and a
// control-side NATSRPC that dials lazily.
type fixture struct {
	srv     *server.Server
	mock    *mockAgent
	agentNC *nats.Conn
	sub     *nats.Subscription
	rpc     *NATSRPC
}

func newFixture(tb testing.TB, mock *mockAgent, opts ...natstest.Option) *fixture {
	tb.Helper()
	srv := natstest.Start(tb, opts...)
	f := &fixture{srv: srv, mock: mock, agentNC: natstest.Connect(tb, srv)}
	f.sub = mock.serve(tb, f.agentNC, SubjectFor(testWS, testAgent))
	f.rpc = NewNATSRPC(DialNATS(srv.ClientURL()))
	tb.Cleanup(f.rpc.Close)
	return f
}

func (f *fixture) session(tb testing.TB, mod ...func(*SessionConfig)) *Session {
	tb.Helper()
	cfg := SessionConfig{WorkspaceID: testWS, AgentID: testAgent, RPC: f.rpc, Relay: testRelay(), Timeout: 5 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := NewSession(cfg)
	if err != nil {
		tb.Fatalf("NewSession: %v", err)
	}
	return s
}

// sessionFixture is a fixture around a fresh mock agent, a session on it and
// a test context.
func sessionFixture(tb testing.TB, opts ...natstest.Option) (*fixture, *Session, context.Context) {
	tb.Helper()
	f := newFixture(tb, newMock(""), opts...)
	return f, f.session(tb), ctxT(tb)
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// isWrite reports whether an encoded request is an fs_write.
func isWrite(data []byte) bool {
	req := new(agentpb.ControlRequest)
	return proto.Unmarshal(data, req) == nil && req.GetFsWrite() != nil
}
