package control

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestRetryBackoff(t *testing.T) {
	for _, c := range []struct {
		attempt int
		j       float64
		want    time.Duration
	}{
		{0, 0, 0}, {0, 0.5, 250 * time.Millisecond}, {1, 0.5, 500 * time.Millisecond}, {3, 0.999, 3996 * time.Millisecond},
		{4, 0.9999, 7999 * time.Millisecond}, {5, 0.5, 4000 * time.Millisecond}, {40, 0.5, 4000 * time.Millisecond},
	} {
		if got := RetryBackoff(c.attempt, c.j); got != c.want {
			t.Errorf("RetryBackoff(%d, %v) = %v, want %v", c.attempt, c.j, got, c.want)
		}
	}
}

// scriptedAgent answers on a real NATS subject: the first n requests of an
// op get code (or silence for TIMEOUT), later ones succeed. It records
// every request id.
type scriptedAgent struct {
	mu   sync.Mutex
	ids  []string
	fail int
	code agentpb.ErrorCode
}

func (a *scriptedAgent) serve(t *testing.T, nc *nats.Conn, subj string) {
	t.Helper()
	if _, err := nc.Subscribe(subj, func(m *nats.Msg) {
		req := new(agentpb.ControlRequest)
		_ = proto.Unmarshal(m.Data, req)
		a.mu.Lock()
		a.ids = append(a.ids, req.GetRequestId())
		failing := len(a.ids) <= a.fail
		a.mu.Unlock()
		resp := &agentpb.ControlResponse{RequestId: req.GetRequestId()}
		switch {
		case failing && a.code == agentpb.ErrorCode_ERROR_CODE_TIMEOUT:
			return // silence: the control side times out
		case failing:
			resp.Error = &agentpb.AgentError{Code: a.code, Message: "scripted", Retryable: true}
		case req.GetExec() != nil:
			resp.Result = &agentpb.ControlResponse_Exec{Exec: &agentpb.ExecResponse{Stdout: []byte("ok")}}
		case req.GetFsStat() != nil:
			resp.Result = &agentpb.ControlResponse_FsStat{FsStat: &agentpb.FsStatResponse{}}
		default:
			resp.Result = &agentpb.ControlResponse_FsWrite{FsWrite: &agentpb.FsWriteResponse{}}
		}
		out, _ := proto.Marshal(resp)
		_ = m.Respond(out)
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (a *scriptedAgent) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ids...)
}

func retrySession(t *testing.T, f ConnFactory, obs *[]Observation, timeout time.Duration) *Session {
	t.Helper()
	rpc := NewNATSRPC(f)
	t.Cleanup(rpc.Close)
	var mu sync.Mutex
	s, err := NewSession(SessionConfig{WorkspaceID: "w", AgentID: "a", RPC: rpc, Retry: true, Timeout: timeout,
		Observer: func(o Observation) {
			mu.Lock()
			*obs = append(*obs, o)
			mu.Unlock()
			panic("observers must not break ops")
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.sleep = func(context.Context, time.Duration) error { return nil }
	s.jitterFn = func() float64 { return 0.5 }
	return s
}

func TestRetryPolicy(t *testing.T) {
	cases := []struct {
		name     string
		code     agentpb.ErrorCode
		fail     int
		op       string
		wantOK   bool
		attempts int
	}{
		{"exec rides out 9 drains", agentpb.ErrorCode_ERROR_CODE_DRAINING, 9, "exec", true, 10},
		{"exec gives up after 10 drain retries", agentpb.ErrorCode_ERROR_CODE_DRAINING, 11, "exec", false, 11},
		{"other ops get 3 drain retries", agentpb.ErrorCode_ERROR_CODE_DRAINING, 4, "fs_write", false, 4},
		{"read-only timeout retried once", agentpb.ErrorCode_ERROR_CODE_TIMEOUT, 1, "fs_stat", true, 2},
		{"exec timeout not retried", agentpb.ErrorCode_ERROR_CODE_TIMEOUT, 1, "exec", false, 1},
		{"OS errors not retried", agentpb.ErrorCode_ERROR_CODE_OS, 1, "fs_stat", false, 1},
		{"FENCED left to the proxy", agentpb.ErrorCode_ERROR_CODE_FENCED, 1, "exec", false, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := natstest.Start(t)
			agent := &scriptedAgent{fail: c.fail, code: c.code}
			agent.serve(t, natstest.Connect(t, srv), SubjectFor("w", "a"))
			var obs []Observation
			s := retrySession(t, DialNATS(srv.ClientURL()), &obs, 300*time.Millisecond)
			var err error
			switch c.op {
			case "exec":
				_, err = s.ExecArgs(ctxT(t), ExecRequestOptions{Argv: []string{"true"}})
			case "fs_stat":
				_, err = s.Stat(ctxT(t), "/x")
			default:
				_, err = s.WriteFile(ctxT(t), "/x", []byte("y"), nil)
			}
			if (err == nil) != c.wantOK {
				t.Fatalf("err = %v, want ok %v", err, c.wantOK)
			}
			ids := agent.requests()
			if len(ids) != c.attempts {
				t.Fatalf("%d attempts, want %d", len(ids), c.attempts)
			}
			seen := map[string]bool{}
			for _, id := range ids {
				if seen[id] {
					t.Fatalf("request id %s reused across retries", id)
				}
				seen[id] = true
			}
			if len(obs) != 1 || obs[0].Op != c.op || obs[0].OK != c.wantOK || obs[0].Retries != c.attempts-1 ||
				obs[0].Healed != (c.wantOK && c.attempts > 1) || obs[0].MachineID != "a" {
				t.Fatalf("observations %+v", obs)
			}
		})
	}
}

// Offline detected before sending (no connection): any op is retried, up
// to 3 times, and the observation says never sent.
func TestRetryNeverSent(t *testing.T) {
	dials := 0
	var obs []Observation
	s := retrySession(t, func(context.Context) (*nats.Conn, error) { dials++; return nil, errors.New("refused") }, &obs, time.Second)
	_, err := s.WriteFile(ctxT(t), "/x", []byte("y"), nil)
	var ce *Error
	if !errors.As(err, &ce) || !ce.AgentOffline || !ce.NeverSent {
		t.Fatalf("err = %v", err)
	}
	if dials != 4 || len(obs) != 1 || !obs[0].NeverSent || obs[0].Retries != 3 || obs[0].FaultClass != FaultOffline {
		t.Fatalf("dials %d, observations %+v", dials, obs)
	}
	// No responders is not "never sent": the request left this process.
	srv := natstest.Start(t)
	obs = nil
	s = retrySession(t, DialNATS(srv.ClientURL()), &obs, time.Second)
	if _, err := s.WriteFile(ctxT(t), "/x", []byte("y"), nil); !errors.As(err, &ce) || ce.NeverSent || obs[0].Retries != 0 {
		t.Fatalf("no responders: %v %+v", err, obs)
	}
}

func TestRenderFault(t *testing.T) {
	if RenderFault(nil) != "" {
		t.Fatal("nil renders")
	}
	for _, c := range []struct {
		err   error
		class FaultClass
		infra bool
		code  string
	}{
		{FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_AGENT_OFFLINE, Detail: map[string]string{DetailNeverSent: "1"}}), FaultOffline, true, "AGENT_OFFLINE"},
		{FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED}), FaultConsent, false, "CONSENT_REQUIRED"},
		{FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_NOT_FOUND}), FaultNotFound, false, "NOT_FOUND"},
		{FromAgentError(&agentpb.AgentError{Code: agentpb.ErrorCode_ERROR_CODE_TIMEOUT}), FaultReconnecting, true, "TIMEOUT"},
		{errors.New("plain"), FaultUnspecified, true, "none"},
	} {
		if got := ClassifyFault(c.err); got != c.class || got.Infrastructure() != c.infra {
			t.Errorf("%v: class %q infra %v", c.err, got, got.Infrastructure())
		}
		out := RenderFault(c.err)
		lines := strings.Split(out, "\n")
		if len(lines) != 5 || !strings.HasPrefix(lines[0], "[connected machine] ") || !strings.HasPrefix(lines[1], "What happened: ") ||
			!strings.Contains(lines[1], "control code "+c.code) || !strings.HasPrefix(lines[2], "Which layer: ") ||
			!strings.HasPrefix(lines[3], "What was preserved: ") || !strings.HasPrefix(lines[4], "What to try: ") || !strings.Contains(lines[4], "retry") {
			t.Errorf("rendering of %v:\n%s", c.err, out)
		}
	}
}
