package harness

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opengeni/opengeni-agent/control"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// treeCommand prints "begin", starts a marked child (sleep secs) that
// records its pid in pidFile, and waits for it: a command with a process
// tree, so "the tree was killed" can be checked on the child.
func treeCommand(secs int, pidFile string) string {
	return fmt.Sprintf("echo begin; sleep %d & echo $! > %s; wait", secs, pidFile)
}

// inflight runs op in the background; the returned channel yields its outcome.
func inflight(op func() Outcome) <-chan Outcome {
	ch := make(chan Outcome, 1)
	go func() { ch <- op() }()
	return ch
}

// execTree runs treeCommand through d and records it; the command must print
// "begin\n" when it is answered at all.
func execTree(ctx context.Context, d *Driver, kind string, secs int, pidFile string) Outcome {
	start := time.Now()
	res, err := d.Session.ExecArgs(ctx, control.ExecRequestOptions{Argv: []string{treeCommand(secs, pidFile)}, Shell: true})
	return d.record(kind, start, err, true, treeMismatch(res, err))
}

func treeMismatch(res *agentpb.ExecResponse, err error) string {
	if err == nil && string(res.GetStdout()) != "begin\n" {
		return fmt.Sprintf("stdout %q, want \"begin\\n\"", clip(res.GetStdout()))
	}
	return ""
}

func runLong(ctx context.Context, e *Env, r *ScenarioResult) error {
	a, err := e.StartAgent(ctx, "long")
	if err != nil {
		return err
	}
	rec := &Recorder{}
	d := e.Driver(a, rec, e.p.opTimeout)
	pidFile := filepath.Join(a.Root, "long-child.pid")
	t0 := time.Now()

	type longResult struct {
		o        Outcome
		timedOut bool
	}
	longDone := make(chan longResult, 1)
	go func() {
		start := time.Now()
		res, err := d.Session.ExecArgs(ctx, control.ExecRequestOptions{
			Argv: []string{treeCommand(int(e.p.longSleep.Seconds()), pidFile)}, Shell: true, Timeout: e.p.longDeadline})
		longDone <- longResult{d.record("exec_past_deadline", start, err, true, treeMismatch(res, err)), err == nil && res.GetTimedOut()}
	}()
	shortOut := d.Echo(ctx, "exec_within_deadline", 5, fmt.Sprint(e.p.shortSleep.Seconds()))
	childPid, pidErr := readPID(pidFile, e.p.longDeadline)
	lr := <-longDone
	t1 := time.Now()
	var survivors []int
	if pidErr == nil {
		survivors = waitGone([]int{childPid}, e.p.goneWait)
		killPIDs(survivors)
	}
	gap, beats := e.Monitor.MaxHeartbeatGap(a.ID, t0, t1)
	r.Latency = rec.Rows()
	r.Metrics["heartbeats"] = float64(beats)
	tree := Check("timed-out tree: processes alive after the reply", float64(len(survivors)), AtMost, 0, "procs").
		With("child pid %d", childPid)
	if pidErr != nil { // the child never ran: nothing was checked
		tree = Check(tree.Name, math.NaN(), AtMost, 0, "procs").With("%v", pidErr)
	}
	r.Verdicts = append(r.Verdicts,
		Check(fmt.Sprintf("sleep %v at a %v deadline: timed_out", e.p.longSleep, e.p.longDeadline), Bool(lr.timedOut), Equal, 1, "").
			With("outcome %s %s %s", lr.o.Class, lr.o.Code, lr.o.Detail),
		tree,
		Check(fmt.Sprintf("sleep %v without a deadline: succeeded", e.p.shortSleep), Bool(shortOut.Class == ClassOK), Equal, 1, "").
			With("outcome %s %s %s", shortOut.Class, shortOut.Code, shortOut.Detail),
		Check("longest heartbeat gap", Millis(gap), AtMost, Millis(e.p.heartbeatGap), "ms").
			With("%d heartbeats in %v", beats, t1.Sub(t0).Round(time.Millisecond)),
	)
	r.Verdicts = append(r.Verdicts, OpVerdicts("", rec.Tally(), false)...)
	return nil
}

func runChaosNATS(ctx context.Context, e *Env, r *ScenarioResult) error {
	a, err := e.StartAgent(ctx, "chaos-nats")
	if err != nil {
		return err
	}
	rec := &Recorder{}
	d := e.Driver(a, rec, 30*time.Second)
	d.Echo(ctx, "exec", 1, "")
	sleep := fmt.Sprint(e.p.chaosExec.Seconds())

	// Restart: the server is killed and comes back on the same port.
	op := inflight(func() Outcome { return d.Echo(ctx, "exec_across_restart", 2, sleep) })
	time.Sleep(500 * time.Millisecond) // the exec is running on the agent
	e.nats.c.kill()
	time.Sleep(e.p.chaosDown)
	if err := e.nats.start(ctx); err != nil {
		return fmt.Errorf("restart nats-server: %w", err)
	}
	up := time.Now()
	r.Verdicts = append(r.Verdicts, e.resumption(ctx, d, a.ID, "restart", up)...)
	r.Verdicts = append(r.Verdicts, answeredOrRetryable("restart: in-flight exec answered or failed typed and retryable", <-op))

	// Freeze: the server is stopped (SIGSTOP) and continued.
	op = inflight(func() Outcome { return d.Echo(ctx, "exec_across_freeze", 3, sleep) })
	time.Sleep(500 * time.Millisecond)
	_ = e.nats.c.signal(syscall.SIGSTOP)
	time.Sleep(e.p.chaosFreeze)
	_ = e.nats.c.signal(syscall.SIGCONT)
	cont := time.Now()
	r.Verdicts = append(r.Verdicts, e.resumption(ctx, d, a.ID, "freeze", cont)...)
	r.Verdicts = append(r.Verdicts, answeredOrRetryable("freeze: in-flight exec answered or failed typed and retryable", <-op))

	d.Echo(ctx, "exec", 4, "")
	r.Latency = rec.Rows()
	r.Verdicts = append(r.Verdicts, OpVerdicts("", rec.Tally(), false)[1:]...) // no answer is allowed across chaos (judged above)
	return nil
}

// resumption measures how the agent comes back after the server did (at
// since): its first hello or heartbeat, the next heartbeat at cadence, and
// the first answered ping.
func (e *Env) resumption(ctx context.Context, d *Driver, agent, phase string, since time.Time) []Verdict {
	limit := Millis(e.p.reconnectMax)
	wctx, cancel := context.WithTimeout(ctx, 2*e.p.reconnectMax)
	defer cancel()
	// Ping from the start, alongside the wait for the announcements.
	pingBack := Check(phase+": ops answered again (first ping)", limit*2, AtMost, limit, "ms")
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		probe := &Driver{Session: d.Session, RPC: d.RPC, Rec: &Recorder{}, Timeout: time.Second}
		for wctx.Err() == nil {
			if probe.Ping(wctx, "probe").Class == ClassOK {
				pingBack.Value = Millis(time.Since(since))
				pingBack.Pass = pingBack.Value <= limit
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	back := Check(phase+": agent announces itself again (hello/heartbeat)", limit*2, AtMost, limit, "ms")
	beat := Check(phase+": heartbeats resume at cadence (next gap)", Millis(e.p.heartbeatGap)*2, AtMost, Millis(e.p.heartbeatGap), "ms")
	if ev, err := e.Monitor.WaitFor(wctx, agent, since, EventHello, EventHeartbeat); err == nil {
		back.Value = Millis(ev.At.Sub(since))
		back.Pass = back.Value <= limit
		back.Detail = "first " + string(ev.Kind)
		if ev2, err := e.Monitor.WaitFor(wctx, agent, ev.At.Add(time.Millisecond), EventHeartbeat); err == nil {
			beat.Value = Millis(ev2.At.Sub(ev.At))
			beat.Pass = beat.Value <= Millis(e.p.heartbeatGap)
		} else {
			beat.Detail = err.Error()
		}
	} else {
		back.Detail = err.Error()
	}
	<-pinged
	return []Verdict{back, beat, pingBack}
}

func runChaosAgent(ctx context.Context, e *Env, r *ScenarioResult) error {
	a, err := e.StartAgent(ctx, "chaos-agent")
	if err != nil {
		return err
	}
	rec := &Recorder{}

	// SIGKILL: the agent cannot clean up.
	pidFile := filepath.Join(a.Root, "kill-child.pid")
	kd := e.Driver(a, rec, 8*time.Second) // the dead agent cannot answer: keep the wait short
	op := inflight(func() Outcome { return execTree(ctx, kd, "exec_across_sigkill", 600, pidFile) })
	childPid, err := readPID(pidFile, 10*time.Second)
	if err != nil {
		return err
	}
	_ = a.c.signal(syscall.SIGKILL)
	a.c.wait(5 * time.Second)
	r.Verdicts = append(r.Verdicts, orphanVerdict("SIGKILL", childPid, e.p.goneWait))
	r.Verdicts = append(r.Verdicts, typedOutcome("SIGKILL: in-flight exec fails typed", <-op))
	a, v := e.restart(ctx, a, "SIGKILL")
	r.Verdicts = append(r.Verdicts, v)
	if a == nil {
		return fmt.Errorf("agent did not come back after SIGKILL")
	}

	// SIGTERM: the agent says GoingOffline, drains, and ends what it runs.
	pidFile = filepath.Join(a.Root, "term-child.pid")
	td := e.Driver(a, rec, 60*time.Second) // the agent drains for up to 20s first
	op = inflight(func() Outcome { return execTree(ctx, td, "exec_across_sigterm", 600, pidFile) })
	childPid, err = readPID(pidFile, 10*time.Second)
	if err != nil {
		return err
	}
	term := time.Now()
	_ = a.c.signal(syscall.SIGTERM)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	ev, err := e.Monitor.WaitFor(wctx, a.ID, term, EventGoingOffline)
	cancel()
	gone := Check("SIGTERM: GoingOffline announced", 0, Equal, 1, "")
	if err == nil {
		gone = Check("SIGTERM: GoingOffline announced", 1, Equal, 1, "").With("after %v", ev.At.Sub(term).Round(time.Millisecond))
	} else {
		gone.Detail = err.Error()
	}
	r.Verdicts = append(r.Verdicts, gone)
	exited := a.c.wait(60 * time.Second)
	r.Metrics["sigterm_exit_s"] = time.Since(term).Seconds()
	r.Verdicts = append(r.Verdicts, Check("SIGTERM: agent exited", Bool(exited), Equal, 1, "").
		With("after %v", time.Since(term).Round(time.Millisecond)))
	r.Verdicts = append(r.Verdicts, orphanVerdict("SIGTERM", childPid, e.p.goneWait))
	r.Verdicts = append(r.Verdicts, typedOutcome("SIGTERM: in-flight exec answered or fails typed", <-op))
	a, v = e.restart(ctx, a, "SIGTERM")
	r.Verdicts = append(r.Verdicts, v)
	if a != nil {
		e.Driver(a, rec, e.p.opTimeout).Echo(ctx, "exec", 1, "")
	}
	r.Latency = rec.Rows()
	// The in-flight execs die with their agent: only typed-ness and the
	// integrity of what was answered are judged here.
	r.Verdicts = append(r.Verdicts, OpVerdicts("", rec.Tally(), false)[1:]...)
	return nil
}

// orphanVerdict waits (bounded) for the marked child of a killed agent's
// command to be gone, then ends it if it was not.
func orphanVerdict(phase string, pid int, wait time.Duration) Verdict {
	alive := waitGone([]int{pid}, wait)
	v := Check(phase+": command's child processes alive after the agent died", float64(len(alive)), AtMost, 0, "procs")
	if len(alive) > 0 {
		parent := parentOf(pid)
		v = v.With("pid %d (%s) still running %v after the agent died, its parent %d (%s) too; the exec guard (internal/proctree) should have killed the group",
			pid, procComm(pid), wait, parent, procComm(parent))
		killPIDs(alive)
	}
	return v
}

// restart starts the agent again on the same id and root and judges the
// time to its first heartbeat.
func (e *Env) restart(ctx context.Context, a *agentProc, phase string) (*agentProc, Verdict) {
	a.c.kill()
	start := time.Now()
	na, err := e.startAgentIn(ctx, a.ID, a.Root)
	v := Check(phase+": restarted agent's first heartbeat", Millis(time.Since(start)), AtMost, Millis(e.p.reconnectMax), "ms")
	if err != nil {
		v.Pass, v.Detail = false, err.Error()
		return nil, v
	}
	return na, v
}

func procComm(pid int) string {
	return strings.TrimSpace(readProcFile(pid, "comm"))
}

func parentOf(pid int) int {
	stat := readProcFile(pid, "stat")
	if i := strings.LastIndexByte(stat, ')'); i >= 0 {
		if f := strings.Fields(stat[i+1:]); len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			return ppid
		}
	}
	return 0
}
