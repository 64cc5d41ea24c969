package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// fakeAgentBinary is a shell script that answers `health` like the agent
// (the real-binary flow is cmd/opengeni-agent's TestFleetUpdateFromControlPlane).
func fakeAgentBinary(t *testing.T, dir, version string) string {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("shell-script fake binaries need a unix shell")
	}
	p := filepath.Join(dir, "opengeni-agent-"+version)
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho \"opengeni-agent "+version+" ok\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

type updateEnv struct {
	nc      *nats.Conn
	exe     string
	su      *SelfUpdate
	ra      *runningAgent
	events  chan *nats.Msg
	restart chan StopReason
	release string // release origin serving 9.0.0
	key     *publish.Key
}

// newUpdateEnv runs an agent with fleet updates on, its binary a fake
// 1.0.0 at exe, and a signed 9.0.0 release on loopback. The restart is
// injected: it reports the StopReason instead of ending the process.
func newUpdateEnv(t *testing.T, mut func(*SelfUpdateOptions), setup ...func(*Agent)) *updateEnv {
	t.Helper()
	key, err := publish.LoadKey(publish.TestKeyFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	e := &updateEnv{restart: make(chan StopReason, 1), key: key}
	dir := t.TempDir()
	e.exe = filepath.Join(dir, "opengeni-agent")
	old, _ := os.ReadFile(fakeAgentBinary(t, t.TempDir(), "1.0.0"))
	if err := os.WriteFile(e.exe, old, 0o755); err != nil {
		t.Fatal(err)
	}
	rel := t.TempDir()
	if _, err := publish.Write(publish.Release{Dir: rel, Version: "9.0.0", Key: key,
		Artifacts: map[string]string{update.Target(): fakeAgentBinary(t, t.TempDir(), "9.0.0")}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(rel)))
	t.Cleanup(srv.Close)
	e.release = srv.URL
	o := SelfUpdateOptions{Executable: e.exe, PublicKey: key.PublicKeyLine(), BaseURL: srv.URL,
		Restart: func(r StopReason) { e.restart <- r }}
	if mut != nil {
		mut(&o)
	}
	e.su, err = NewSelfUpdate(o)
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Start(t)
	e.nc = natstest.Connect(t, ns)
	e.events = subscribe(t, e.nc, testSubject("events"))
	hello := subscribe(t, e.nc, testSubject("hello"))
	e.ra = startAgent(t, ns.ClientURL(), func(o *Options) { o.SelfUpdate = e.su; o.HeartbeatInterval = time.Hour }, setup...)
	next(t, hello, &agentpb.Hello{})
	return e
}

func (e *updateEnv) apply(t *testing.T, r *agentpb.AgentUpdateApplyRequest) *agentpb.ControlResponse {
	t.Helper()
	return request(t, e.nc, &agentpb.ControlRequest{RequestId: "u-" + r.GetOperationId(),
		Op: &agentpb.ControlRequest_AgentUpdateApply{AgentUpdateApply: r}})
}

// progress waits for the next AgentUpdateProgress of op (heartbeats and
// other operations' re-announcements skipped).
func (e *updateEnv) progress(t *testing.T, op string) *agentpb.AgentUpdateProgress {
	t.Helper()
	for {
		ev := next(t, e.events, &agentpb.AgentEvent{})
		if p := ev.GetAgentUpdateProgress(); p != nil && p.GetOperationId() == op {
			return p
		}
	}
}

func (e *updateEnv) expectStages(t *testing.T, op string, stages ...agentpb.AgentUpdateStage) *agentpb.AgentUpdateProgress {
	t.Helper()
	var p *agentpb.AgentUpdateProgress
	for _, want := range stages {
		p = e.progress(t, op)
		if p.GetStage() != want {
			t.Fatalf("progress %v, want %s of %s", p, want, op)
		}
	}
	return p
}

// The whole accepted path with an injected restart: every stage in order,
// the restart asked for with GoingOffline UPDATE, the completion record
// written, and a "restarted" process (a new SelfUpdate over the swapped
// binary) reports it in Hello; a stale record is dropped.
func TestAgentUpdateApplyRecordsCompletionAndRestarts(t *testing.T) {
	e := newUpdateEnv(t, nil)
	resp := e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "op-1", TargetVersion: "9.0.0", ExpectedCurrentVersion: Version,
		ExpectedCurrentSha256: strings.ToUpper(e.su.SHA256())})
	a := resp.GetAgentUpdateApply()
	if !a.GetAccepted() || a.GetOperationId() != "op-1" || a.GetCurrentVersion() != Version || a.GetCurrentSha256() != e.su.SHA256() || a.GetTargetVersion() != "9.0.0" {
		t.Fatalf("answer: %v", resp)
	}
	last := e.expectStages(t, "op-1", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_VERIFYING,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_APPLYING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING)
	newSHA := fileSHA256(e.exe)
	if last.GetExpectedBinarySha256() != newSHA || last.GetTargetVersion() != "9.0.0" {
		t.Fatalf("RESTARTING: %v (installed %s)", last, newSHA)
	}
	select {
	case r := <-e.restart:
		if r.Reason != agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_UPDATE || !strings.Contains(r.Message, "9.0.0") {
			t.Fatalf("restart reason %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no restart")
	}
	// the running process's own Hello still describes the old binary
	if h := e.ra.Hello(); h.GetCompletedUpdateOperationId() != "" {
		t.Fatalf("hello before the restart: %v", h)
	}
	// "after the restart"
	su2, err := NewSelfUpdate(SelfUpdateOptions{Executable: e.exe, Restart: func(StopReason) {}})
	if err != nil {
		t.Fatal(err)
	}
	a2, err := New(Options{Servers: []string{"nats://127.0.0.1:1"}, WorkspaceID: testWS, AgentID: testAgent, WorkspaceRoot: t.TempDir(), SelfUpdate: su2})
	if err != nil {
		t.Fatal(err)
	}
	if h := a2.Hello(); h.GetCompletedUpdateOperationId() != "op-1" || h.GetCompletedUpdateTargetVersion() != "9.0.0" || h.GetCompletedUpdateBinarySha256() != newSHA {
		t.Fatalf("hello after the restart: %v", h)
	}
	// a repeat of the completed operation answers from the record and starts nothing
	rep, err := su2.apply(updateRequest{req: &agentpb.AgentUpdateApplyRequest{OperationId: "op-1"},
		publish: func(p *agentpb.AgentUpdateProgress) { t.Errorf("repeat published %v", p) }})
	if err != nil || !rep.GetAccepted() || rep.GetCurrentSha256() != newSHA || rep.GetTargetVersion() != "9.0.0" {
		t.Fatalf("repeat after restart: %v %v", rep, err)
	}
	// the binary changed by other means: the record is stale and dropped
	if err := os.WriteFile(e.exe, []byte("#!/bin/sh\necho other\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	su3, err := NewSelfUpdate(SelfUpdateOptions{Executable: e.exe, Restart: func(StopReason) {}})
	if err != nil || su3.Completed() != nil {
		t.Fatalf("stale record kept: %v %v", su3.Completed(), err)
	}
	if _, err := os.Stat(CompletedUpdatePath(e.exe)); !os.IsNotExist(err) {
		t.Fatalf("stale record not removed: %v", err)
	}
}

// Refusals answer at once with a typed error and start nothing.
func TestAgentUpdateApplyRefusals(t *testing.T) {
	e := newUpdateEnv(t, nil)
	for _, tc := range []struct {
		name   string
		req    *agentpb.AgentUpdateApplyRequest
		code   agentpb.ErrorCode
		reason string
		msg    string
	}{
		{"wrong version", &agentpb.AgentUpdateApplyRequest{OperationId: "f1", ExpectedCurrentVersion: "0.0.1"},
			agentpb.ErrorCode_ERROR_CODE_FENCED, "version_mismatch", "expected current version 0.0.1"},
		{"wrong sha", &agentpb.AgentUpdateApplyRequest{OperationId: "f2", ExpectedCurrentSha256: "abc"},
			agentpb.ErrorCode_ERROR_CODE_FENCED, "sha256_mismatch", "expected current binary sha256 abc"},
		{"no operation id", &agentpb.AgentUpdateApplyRequest{TargetVersion: "9.0.0"},
			agentpb.ErrorCode_ERROR_CODE_PROTOCOL, "", "operation_id is required"},
	} {
		resp := e.apply(t, tc.req)
		er := resp.GetError()
		if er.GetCode() != tc.code || er.GetRetryable() || er.GetDetail()["reason"] != tc.reason || !strings.Contains(er.GetMessage(), tc.msg) {
			t.Errorf("%s: %v", tc.name, resp)
		}
	}
	// already running the target: not accepted, current == target
	resp := e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "same", TargetVersion: Version})
	if a := resp.GetAgentUpdateApply(); a == nil || a.GetAccepted() || a.GetCurrentVersion() != Version {
		t.Fatalf("same version: %v", resp)
	}
	// a downgrade through the manifest is refused at the version gate
	old := t.TempDir()
	if _, err := publish.Write(publish.Release{Dir: old, Version: "0.0.1", Key: e.key,
		Artifacts: map[string]string{update.Target(): fakeAgentBinary(t, t.TempDir(), "0.0.1")}}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(old)))
	defer srv.Close()
	if a := e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "down", ReleaseBaseUrl: srv.URL}).GetAgentUpdateApply(); !a.GetAccepted() {
		t.Fatalf("downgrade answer: %v", a)
	}
	p := e.expectStages(t, "down", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED)
	if p.GetErrorCode() != UpdateErrVersionGate || p.GetRetryable() || p.GetRolledBack() {
		t.Fatalf("downgrade: %v", p)
	}
	// the channel serves another version than asked for
	e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "other", TargetVersion: "8.0.0"})
	p = e.expectStages(t, "other", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_VERIFYING,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED)
	if p.GetErrorCode() != UpdateErrTargetMismatch || !p.GetRetryable() {
		t.Fatalf("target mismatch: %v", p)
	}
	if got := fileSHA256(e.exe); got != e.su.SHA256() {
		t.Fatal("a refused update touched the binary")
	}
}

// WAITING_FOR_IDLE: while another op is in flight the update waits, bounded
// (NOT_IDLE, retryable); a second operation meanwhile is FENCED
// (update_in_progress); once the machine is idle an update proceeds.
func TestAgentUpdateWaitsForIdle(t *testing.T) {
	entered, release := make(chan struct{}, 4), make(chan struct{})
	e := newUpdateEnv(t, func(o *SelfUpdateOptions) { o.IdleTimeout = time.Second }, func(a *Agent) {
		// an op that runs until the test releases it
		Handle(a.Dispatcher(), "browser_control_ensure", Heavy, func(ctx context.Context, _ *agentpb.BrowserControlEnsureRequest) (*agentpb.BrowserControlEnsureResponse, error) {
			entered <- struct{}{}
			<-release
			return &agentpb.BrowserControlEnsureResponse{}, nil
		})
	})
	busy := make(chan *nats.Msg, 1)
	if err := e.nc.PublishRequest(testSubject("rpc"), "busy-reply", mustMarshal(t, &agentpb.ControlRequest{RequestId: "busy",
		Op: &agentpb.ControlRequest_BrowserControlEnsure{BrowserControlEnsure: &agentpb.BrowserControlEnsureRequest{}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.nc.ChanSubscribe("busy-reply", busy); err != nil {
		t.Fatal(err)
	}
	<-entered
	if a := e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "w1", ReleaseBaseUrl: "http://127.0.0.1:1"}).GetAgentUpdateApply(); !a.GetAccepted() {
		t.Fatal("not accepted")
	}
	e.expectStages(t, "w1", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE)
	// while w1 waits, another operation is fenced, a repeat of w1 is not
	resp := e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "w2"})
	if er := resp.GetError(); er.GetCode() != agentpb.ErrorCode_ERROR_CODE_FENCED || !er.GetRetryable() || er.GetDetail()["reason"] != "update_in_progress" || er.GetDetail()["operation_id"] != "w1" {
		t.Fatalf("second operation: %v", resp)
	}
	// the repeat re-announces the latest stage only
	if a := e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "w1"}).GetAgentUpdateApply(); !a.GetAccepted() || a.GetOperationId() != "w1" {
		t.Fatalf("repeat: %v", a)
	}
	// (the bound may already have passed: then FAILED is re-announced)
	var p *agentpb.AgentUpdateProgress
	for p.GetStage() != agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED {
		p = e.progress(t, "w1")
		if st := p.GetStage(); st != agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE && st != agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED {
			t.Fatalf("a waiting update moved on while an op ran: %v", p)
		}
	}
	if p.GetErrorCode() != UpdateErrNotIdle || !p.GetRetryable() {
		t.Fatalf("busy machine: %v", p)
	}
	close(release)
	next(t, busy, &agentpb.ControlResponse{})
	// idle now: the next operation gets past WAITING_FOR_IDLE (and fails
	// at the unreachable release origin, retryable)
	e.apply(t, &agentpb.AgentUpdateApplyRequest{OperationId: "w3", ReleaseBaseUrl: "http://127.0.0.1:1"})
	p = e.expectStages(t, "w3", agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED)
	if p.GetErrorCode() != UpdateErrDownload || !p.GetRetryable() {
		t.Fatalf("unreachable origin: %v", p)
	}
}

// Without a SelfUpdate the op is not served: UNSUPPORTED by name.
func TestAgentUpdateApplyUnsupportedWithoutSelfUpdate(t *testing.T) {
	a, err := New(Options{Servers: []string{"nats://127.0.0.1:1"}, WorkspaceID: testWS, AgentID: testAgent, WorkspaceRoot: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	resp := roundTrip(t, a.Dispatcher(), &agentpb.ControlRequest{RequestId: "r",
		Op: &agentpb.ControlRequest_AgentUpdateApply{AgentUpdateApply: &agentpb.AgentUpdateApplyRequest{OperationId: "x"}}}, 1<<20)
	if e := resp.GetError(); e.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || !strings.Contains(e.GetMessage(), "agent_update_apply") {
		t.Fatalf("%v", resp)
	}
	if _, err := NewSelfUpdate(SelfUpdateOptions{}); err == nil {
		t.Fatal("a SelfUpdate without a restart hook")
	}
}

// The boot probation: an updated binary counts its starts until it comes
// online (Hello published, then the record is confirmed and starts stop
// counting); one that starts MaxUnconfirmedBoots times without coming
// online is rolled back to the previous binary at its next start.
func TestUpdatedBinaryBootProbation(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "opengeni-agent")
	v1, _ := os.ReadFile(fakeAgentBinary(t, t.TempDir(), "1.0.0"))
	v2, _ := os.ReadFile(fakeAgentBinary(t, t.TempDir(), "2.0.0"))
	install := func() {
		t.Helper()
		os.Remove(exe)
		os.Remove(update.PreviousPath(exe))
		if err := os.WriteFile(exe, v1, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := update.Swap(exe, v2); err != nil {
			t.Fatal(err)
		}
		if err := writeCompleted(exe, &CompletedUpdate{OperationID: "op", TargetVersion: "2.0.0", BinarySHA256: fileSHA256(exe)}); err != nil {
			t.Fatal(err)
		}
	}
	start := func() (*SelfUpdate, error) {
		return NewSelfUpdate(SelfUpdateOptions{Executable: exe, Restart: func(StopReason) {}})
	}

	install()
	for i := 1; i <= MaxUnconfirmedBoots; i++ {
		su, err := start()
		if err != nil || su.Completed() == nil || su.Completed().Boots != i {
			t.Fatalf("start %d: %v %+v", i, err, su)
		}
	}
	if _, err := start(); !errors.Is(err, ErrUpdateRolledBack) {
		t.Fatalf("start %d: %v", MaxUnconfirmedBoots+1, err)
	}
	if b, _ := os.ReadFile(exe); string(b) != string(v1) {
		t.Fatal("not rolled back to the previous binary")
	}
	if _, err := os.Stat(CompletedUpdatePath(exe)); !os.IsNotExist(err) {
		t.Fatalf("record kept after the rollback: %v", err)
	}

	// Coming online confirms: later starts do not count.
	install()
	su, err := start()
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns)
	hello := subscribe(t, nc, testSubject("hello"))
	startAgent(t, ns.ClientURL(), func(o *Options) { o.SelfUpdate = su })
	if h := next(t, hello, &agentpb.Hello{}); h.GetCompletedUpdateOperationId() != "op" {
		t.Fatalf("hello: %v", h)
	}
	natstest.Eventually(t, 10*time.Second, func() error {
		if rec, err := readCompleted(exe); err != nil || !rec.Confirmed {
			return fmt.Errorf("record %+v %v", rec, err)
		}
		return nil
	})
	for i := 0; i < MaxUnconfirmedBoots+1; i++ {
		if su, err := start(); err != nil || su.Completed() == nil || su.Completed().Boots != 1 {
			t.Fatalf("confirmed start %d: %v %+v", i, err, su.Completed())
		}
	}
	if b, _ := os.ReadFile(exe); string(b) != string(v2) {
		t.Fatal("a confirmed binary was rolled back")
	}
}
