package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/service"
	"github.com/opengeni/opengeni-agent/agent/update"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/cmd/release/publish"
	"github.com/opengeni/opengeni-agent/internal/natstest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

const fleetWS = "ws-fleet"

const outdatedUnit = "[Service]\nExecStart=/old/place/opengeni-agent run\n"

// fleetMachine is one real agent process (`opengeni-agent run`) on its own
// copy of a build.
type fleetMachine struct {
	id     string
	bin    string
	sess   *control.Session
	exited chan struct{} // the machine (and, when managed, its supervisor) ended

	mu       sync.Mutex
	cmd      *exec.Cmd // the current process
	exits    []int     // exit statuses, in order
	stopping bool
}

func (m *fleetMachine) exitCodes() []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int(nil), m.exits...)
}

// machineTraffic records what the machines publish on their v1 hello and
// events subjects.
type machineTraffic struct {
	mu     sync.Mutex
	hellos map[string][]*agentpb.Hello
	events map[string][]*agentpb.AgentEvent
}

func (tr *machineTraffic) record(msg *nats.Msg) {
	tok := strings.Split(msg.Subject, ".")
	if len(tok) != 4 {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch tok[3] {
	case "hello":
		var h agentpb.Hello
		if proto.Unmarshal(msg.Data, &h) == nil {
			tr.hellos[tok[2]] = append(tr.hellos[tok[2]], &h)
		}
	case "events":
		var ev agentpb.AgentEvent
		if proto.Unmarshal(msg.Data, &ev) == nil {
			tr.events[tok[2]] = append(tr.events[tok[2]], &ev)
		}
	}
}

func (tr *machineTraffic) helloCount(id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.hellos[id])
}

func (tr *machineTraffic) hello(id string, i int) *agentpb.Hello {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.hellos[id][i]
}

// progress lists the machine's AgentUpdateProgress events for op.
func (tr *machineTraffic) progress(id, op string) []*agentpb.AgentUpdateProgress {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []*agentpb.AgentUpdateProgress
	for _, ev := range tr.events[id] {
		if p := ev.GetAgentUpdateProgress(); p != nil && p.GetOperationId() == op {
			out = append(out, p)
		}
	}
	return out
}

func (tr *machineTraffic) goingOffline(id string) []*agentpb.GoingOffline {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []*agentpb.GoingOffline
	for _, ev := range tr.events[id] {
		if g := ev.GetGoingOffline(); g != nil {
			out = append(out, g)
		}
	}
	return out
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// agentEnv is the environment of a foreground agent: no service manager
// markers (so an update re-executes in place) and no stored connections.
func agentEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "INVOCATION_ID" || k == "XPC_SERVICE_NAME" || k == "HOME" || strings.HasPrefix(k, "OPENGENI_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "OPENGENI_CONFIG_DIR="+filepath.Join(home, "config"))
}

// TestFleetUpdateFromControlPlane drives real agent processes over a real
// nats-server with the control library: a machine updates 1.0.0 → 2.0.0
// through every progress stage, restarts onto the new binary (re-exec in
// place) and its next Hello confirms the operation with the new sha; a
// machine offered a build that crashes at start rolls back and keeps
// serving 1.0.0; a repeated operation id starts nothing; an update fenced
// to another binary is refused.
func TestFleetUpdateFromControlPlane(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("unix re-exec")
	}
	if testing.Short() {
		t.Skip("builds the agent")
	}
	key, err := publish.LoadKey(publish.TestKeyFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	v1 := buildAgent(t, "1.0.0", key.PublicKeyLine())
	v2 := buildAgent(t, "2.0.0", key.PublicKeyLine())
	crasher := buildCrasher(t)
	release := func(version, build string) string {
		dir := t.TempDir()
		if _, err := publish.Write(publish.Release{Dir: dir, Version: version, Key: key,
			Artifacts: map[string]string{update.Target(): build}}); err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	goodRelease := release("2.0.0", v2)
	crashRelease := release("2.0.0", crasher)

	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns)
	tr := &machineTraffic{hellos: map[string][]*agentpb.Hello{}, events: map[string][]*agentpb.AgentEvent{}}
	for _, subj := range []string{"agent." + fleetWS + ".*.hello", "agent." + fleetWS + ".*.events"} {
		if _, err := nc.Subscribe(subj, tr.record); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rpc := control.NewNATSRPC(control.StaticConn(nc))

	v1SHA := sha256File(t, v1)
	// start runs a machine. A managed one runs as under a service manager
	// (INVOCATION_ID set, as systemd does): the test restarts it whenever it
	// exits with the update status, as Restart=always would.
	start := func(id string, managed bool) *fleetMachine {
		t.Helper()
		home := t.TempDir()
		bin := filepath.Join(home, "opengeni-agent")
		data, _ := os.ReadFile(v1)
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
		logf, err := os.Create(filepath.Join(home, "agent.log"))
		if err != nil {
			t.Fatal(err)
		}
		env := agentEnv(home)
		if managed {
			env = append(env, "INVOCATION_ID=fleet-e2e")
			// an installed user unit from an older release, for the new
			// binary to reconcile before the manager restarts it
			unit := filepath.Join(home, ".config", "systemd", "user", service.UnitName)
			os.MkdirAll(filepath.Dir(unit), 0o755)
			if err := os.WriteFile(unit, []byte(outdatedUnit), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		m := &fleetMachine{id: id, bin: bin, exited: make(chan struct{})}
		launch := func() *exec.Cmd {
			cmd := exec.Command(bin, "run", "--nats-url", ns.ClientURL(), "--workspace-id", fleetWS, "--agent-id", id, "--log-level", "debug")
			cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = home, env, logf, logf
			if err := cmd.Start(); err != nil {
				t.Errorf("start %s: %v", id, err)
				return nil
			}
			return cmd
		}
		m.cmd = launch()
		go func() {
			defer close(m.exited)
			for cmd := m.cmd; cmd != nil; {
				err := cmd.Wait()
				code := cmd.ProcessState.ExitCode()
				m.mu.Lock()
				m.exits = append(m.exits, code)
				stopping := m.stopping
				m.mu.Unlock()
				if err == nil || !managed || stopping || code != exitRestartForUpdate {
					return
				}
				next := launch()
				m.mu.Lock()
				m.cmd, cmd = next, next
				m.mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			m.mu.Lock()
			m.stopping = true
			_ = m.cmd.Process.Signal(os.Interrupt)
			m.mu.Unlock()
			select {
			case <-m.exited:
			case <-time.After(15 * time.Second):
				m.mu.Lock()
				_ = m.cmd.Process.Kill()
				m.mu.Unlock()
				<-m.exited
			}
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s log:\n%s", id, b)
			}
		})
		m.sess, err = control.NewSession(control.SessionConfig{WorkspaceID: fleetWS, AgentID: id, RPC: rpc, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		natstest.Eventually(t, 30*time.Second, func() error {
			if tr.helloCount(id) == 0 {
				return fmt.Errorf("%s: no hello yet", id)
			}
			return nil
		})
		if h := tr.hello(id, 0); h.GetAgentVersion() != "1.0.0" || h.GetBinarySha256() != v1SHA || h.GetCompletedUpdateOperationId() != "" {
			t.Fatalf("%s first hello: %v", id, h)
		}
		return m
	}
	good, crashy, fenced := start("m-good", false), start("m-crash", false), start("m-fenced", false)
	svc := start("m-service", true)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var progMu sync.Mutex
	seen := map[string][]string{}
	onProgress := func(machine string, p *agentpb.AgentUpdateProgress) {
		progMu.Lock()
		seen[machine] = append(seen[machine], p.GetStage().String())
		progMu.Unlock()
	}

	// One rollout, three machines, two at a time: one fenced to a binary it
	// does not run (refused, untouched), one fenced correctly (updated, in
	// the foreground: re-executed in place), one under a "service manager"
	// (exits with the update status and is started again).
	res, err := control.RollOut(ctx, []control.RolloutMachine{
		{Session: fenced.sess, ExpectedVersion: "1.0.0", ExpectedSHA256: strings.Repeat("0", 64)},
		{Session: good.sess, ExpectedVersion: "1.0.0", ExpectedSHA256: v1SHA},
		{Session: svc.sess, ExpectedVersion: "1.0.0"},
	}, control.RolloutOptions{Conn: nc, TargetVersion: "2.0.0", ReleaseBaseURL: goodRelease, OperationID: "rollout-1",
		Parallelism: 2, Timeout: 2 * time.Minute, Progress: onProgress})
	if err != nil {
		t.Fatal(err)
	}
	fr, gr, sr := res[0], res[1], res[2]
	t.Logf("fenced: %s %v", fr.Outcome, fr.Err)
	if fr.Outcome != control.UpdateFenced || fr.Retryable || !strings.Contains(fmt.Sprint(fr.Err), "sha256") {
		t.Fatalf("fenced machine: %+v", fr)
	}
	if got := sha256File(t, fenced.bin); got != v1SHA {
		t.Fatal("fenced machine's binary changed")
	}
	t.Logf("good: %s stages %v version %s sha %s", gr.Outcome, gr.Stages, gr.Version, gr.BinarySHA256)
	v2SHA := sha256File(t, v2)
	wantStages := []agentpb.AgentUpdateStage{
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_WAITING_FOR_IDLE,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_DOWNLOADING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_VERIFYING,
		agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_APPLYING, agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_RESTARTING,
	}
	if gr.Outcome != control.UpdateUpdated || gr.Version != "2.0.0" || gr.BinarySHA256 != v2SHA || fmt.Sprint(gr.Stages) != fmt.Sprint(wantStages) {
		t.Fatalf("good machine: %+v", gr)
	}
	if a := gr.Answer; !a.GetAccepted() || a.GetCurrentVersion() != "1.0.0" || a.GetCurrentSha256() != v1SHA || a.GetTargetVersion() != "2.0.0" {
		t.Fatalf("good machine's answer: %v", a)
	}
	progMu.Lock()
	if len(seen["m-good"]) != len(wantStages) || len(seen["m-service"]) != len(wantStages) || len(seen["m-fenced"]) != 0 {
		t.Fatalf("progress callback saw %v", seen)
	}
	progMu.Unlock()
	// The restarted process (same pid: re-executed in place) says hello
	// with the completed operation and the new binary.
	last := tr.hello("m-good", tr.helloCount("m-good")-1)
	if last.GetAgentVersion() != "2.0.0" || last.GetBinarySha256() != v2SHA || last.GetCompletedUpdateOperationId() != gr.OperationID ||
		last.GetCompletedUpdateTargetVersion() != "2.0.0" || last.GetCompletedUpdateBinarySha256() != v2SHA {
		t.Fatalf("hello after the update: %v", last)
	}
	if g := tr.goingOffline("m-good"); len(g) != 1 || g[0].GetReason() != agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_UPDATE {
		t.Fatalf("going offline: %v", g)
	}
	if p := tr.progress("m-good", gr.OperationID); p[len(p)-1].GetExpectedBinarySha256() != v2SHA {
		t.Fatalf("progress expected sha: %v", p[len(p)-1])
	}
	select {
	case <-good.exited:
		t.Fatal("the updated agent's process exited instead of re-executing")
	default:
	}
	// the new binary came online, which ends its boot probation
	natstest.Eventually(t, 10*time.Second, func() error {
		b, err := os.ReadFile(agent.CompletedUpdatePath(good.bin))
		var rec agent.CompletedUpdate
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		if err != nil || !rec.Confirmed || rec.OperationID != gr.OperationID || rec.BinarySHA256 != v2SHA || rec.Boots != 1 {
			return fmt.Errorf("update record %s: %v", b, err)
		}
		return nil
	})
	if prev := sha256File(t, update.PreviousPath(good.bin)); prev != v1SHA {
		t.Fatal("previous binary not kept")
	}
	if !good.sess.Ping(ctx) {
		t.Fatal("updated machine does not answer")
	}
	if codes := good.exitCodes(); len(codes) != 0 {
		t.Fatalf("foreground machine exited: %v", codes)
	}
	// The managed machine exited once with the update status and its
	// restart reported the completed operation.
	if sr.Outcome != control.UpdateUpdated || sr.Version != "2.0.0" || sr.BinarySHA256 != v2SHA {
		t.Fatalf("managed machine: %+v", sr)
	}
	if codes := svc.exitCodes(); fmt.Sprint(codes) != fmt.Sprint([]int{exitRestartForUpdate}) {
		t.Fatalf("managed machine exit statuses %v, want [%d]", codes, exitRestartForUpdate)
	}
	if !svc.sess.Ping(ctx) {
		t.Fatal("restarted managed machine does not answer")
	}
	unit, _ := os.ReadFile(filepath.Join(filepath.Dir(svc.bin), ".config", "systemd", "user", service.UnitName))
	if string(unit) == outdatedUnit || !strings.Contains(string(unit), svc.bin+" run") {
		t.Fatalf("service definition not reconciled by the new binary:\n%s", unit)
	}

	// A crashing build: FAILED rolled_back=true, still 1.0.0 and serving.
	res, err = control.RollOut(ctx, []control.RolloutMachine{{Session: crashy.sess, ExpectedVersion: "1.0.0"}},
		control.RolloutOptions{Conn: nc, TargetVersion: "2.0.0", ReleaseBaseURL: crashRelease, OperationID: "rollout-2", Progress: onProgress})
	if err != nil {
		t.Fatal(err)
	}
	cr := res[0]
	t.Logf("crash: %s %s stages %v: %v", cr.Outcome, cr.ErrorCode, cr.Stages, cr.Err)
	if cr.Outcome != control.UpdateRolledBack || cr.ErrorCode != "HEALTH_CHECK" || cr.Retryable ||
		cr.Stages[len(cr.Stages)-1] != agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED {
		t.Fatalf("crashing build: %+v", cr)
	}
	if got := sha256File(t, crashy.bin); got != v1SHA {
		t.Fatal("crashing build left installed")
	}
	if out, err := exec.Command(crashy.bin, "version").Output(); err != nil || strings.TrimSpace(string(out)) != "opengeni-agent 1.0.0" {
		t.Fatalf("after rollback: %q %v", out, err)
	}
	if !crashy.sess.Ping(ctx) || tr.helloCount("m-crash") != 1 || len(tr.goingOffline("m-crash")) != 0 {
		t.Fatal("the machine did not keep serving on its old binary")
	}

	// Repeats of an operation id return the first answer and start nothing:
	// no new ACCEPTED (the latest stage is only re-announced), the binary
	// untouched. A ping is the barrier: the agent publishes on one
	// connection, so events of the repeat arrive before the ping's reply.
	before := len(tr.progress("m-crash", cr.OperationID))
	again, err := crashy.sess.AgentUpdateApply(ctx, &agentpb.AgentUpdateApplyRequest{OperationId: cr.OperationID,
		TargetVersion: "2.0.0", ReleaseBaseUrl: goodRelease})
	if err != nil || !proto.Equal(again, cr.Answer) {
		t.Fatalf("repeat: %v %v (first %v)", again, err, cr.Answer)
	}
	if !crashy.sess.Ping(ctx) {
		t.Fatal("ping")
	}
	after := tr.progress("m-crash", cr.OperationID)
	if len(after) != before+1 || after[len(after)-1].GetStage() != agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_FAILED || !after[len(after)-1].GetRolledBack() {
		t.Fatalf("repeat published %d events (before %d): %v", len(after), before, after)
	}
	accepted := 0
	for _, p := range after {
		if p.GetStage() == agentpb.AgentUpdateStage_AGENT_UPDATE_STAGE_ACCEPTED {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("%d ACCEPTED events for one operation", accepted)
	}
	if got := sha256File(t, crashy.bin); got != v1SHA {
		t.Fatal("repeat touched the binary")
	}
	// After the restart the record answers a repeat of the completed
	// operation: accepted, running the target, nothing published.
	hellos, events := tr.helloCount("m-good"), len(tr.progress("m-good", gr.OperationID))
	again, err = good.sess.AgentUpdateApply(ctx, &agentpb.AgentUpdateApplyRequest{OperationId: gr.OperationID, TargetVersion: "2.0.0"})
	if err != nil || !again.GetAccepted() || again.GetCurrentVersion() != "2.0.0" || again.GetCurrentSha256() != v2SHA {
		t.Fatalf("repeat after restart: %v %v", again, err)
	}
	if !good.sess.Ping(ctx) || len(tr.progress("m-good", gr.OperationID)) != events || tr.helloCount("m-good") != hellos {
		t.Fatal("a repeat of a completed operation started something")
	}
	// Re-running the whole rollout with the same id re-attaches: updated, nothing new.
	res, err = control.RollOut(ctx, []control.RolloutMachine{{Session: good.sess}},
		control.RolloutOptions{Conn: nc, TargetVersion: "2.0.0", ReleaseBaseURL: goodRelease, OperationID: "rollout-1"})
	if err != nil || res[0].Outcome != control.UpdateUpdated || res[0].Version != "2.0.0" {
		t.Fatalf("re-run rollout: %+v %v", res, err)
	}
	// And a target it already runs is up to date.
	res, err = control.RollOut(ctx, []control.RolloutMachine{{Session: good.sess}},
		control.RolloutOptions{Conn: nc, TargetVersion: "2.0.0", ReleaseBaseURL: goodRelease})
	if err != nil || res[0].Outcome != control.UpdateUpToDate {
		t.Fatalf("same version: %+v %v", res, err)
	}
}
