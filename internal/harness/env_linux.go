package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opengeni/opengeni-agent/control"
)

// Workspace is the workspace id every harness agent is enrolled in.
const Workspace = "22222222-2222-2222-2222-222222222222"

// Env is what a scenario runs against: the nats-server process, the agent
// binary, the event monitor and the agents the scenario started.
type Env struct {
	runID    string
	dir      string
	agentBin string
	p        params
	log      *slog.Logger

	nats    *natsProc
	Monitor *Monitor
	rpc     *control.NATSRPC

	mu     sync.Mutex
	agents []*agentProc
}

// natsProc is the nats-server child; it keeps its port across restarts.
type natsProc struct {
	self string
	env  []string
	port int
	c    *child
}

func (n *natsProc) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// start runs the server and waits for its "ready" line.
func (n *natsProc) start(ctx context.Context) error {
	pr, pw := io.Pipe()
	c, err := startChild(n.self, []string{NATSServerCommand, strconv.Itoa(n.port)}, n.env, pw, os.Stderr)
	if err != nil {
		return err
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() { <-c.done; pw.Close() }()
	select {
	case line, ok := <-lines:
		addr, found := strings.CutPrefix(line, "ready ")
		if !ok || !found {
			c.kill()
			return fmt.Errorf("nats-server child did not start (%q)", line)
		}
		_, portStr, _ := strings.Cut(addr, ":")
		if p, err := strconv.Atoi(portStr); err == nil {
			n.port = p
		}
		n.c = c
		return nil
	case <-ctx.Done():
		c.kill()
		return ctx.Err()
	case <-time.After(15 * time.Second):
		c.kill()
		return fmt.Errorf("nats-server child not ready after 15s")
	}
}

// agentProc is one opengeni-agent process.
type agentProc struct {
	ID   string
	Root string
	c    *child
}

// Pid is the agent process id.
func (a *agentProc) Pid() int { return a.c.pid() }

// newEnv builds the agent, starts the nats-server and the monitor.
func newEnv(ctx context.Context, cfg Config, p params, runID string) (*Env, error) {
	dir, err := os.MkdirTemp("", "opengeni-harness-")
	if err != nil {
		return nil, err
	}
	e := &Env{runID: runID, dir: dir, agentBin: cfg.AgentBin, p: p, log: cfg.Logger}
	if e.agentBin == "" {
		e.agentBin = filepath.Join(dir, "opengeni-agent")
		e.log.Info("building the agent", "out", e.agentBin)
		build := exec.CommandContext(ctx, "go", "build", "-o", e.agentBin, "github.com/opengeni/opengeni-agent/cmd/opengeni-agent")
		if out, err := build.CombinedOutput(); err != nil {
			e.Close()
			return nil, fmt.Errorf("build agent: %w\n%s", err, out)
		}
	}
	self, err := os.Executable()
	if err != nil {
		e.Close()
		return nil, err
	}
	e.nats = &natsProc{self: self, env: e.childEnv()}
	if err := e.nats.start(ctx); err != nil {
		e.Close()
		return nil, err
	}
	if e.Monitor, err = NewMonitor(e.nats.url(), Workspace); err != nil {
		e.Close()
		return nil, err
	}
	e.rpc = control.NewNATSRPC(control.DialNATS(e.nats.url()))
	return e, nil
}

func (e *Env) childEnv() []string {
	return append(os.Environ(), MarkerEnv+"="+e.runID)
}

// Close ends every process of the run: agents, the nats-server, and any
// process that carries the run's marker (what the agents' commands left).
func (e *Env) Close() {
	e.stopAgents(0)
	if e.rpc != nil {
		e.rpc.Close()
	}
	if e.Monitor != nil {
		e.Monitor.Close()
	}
	if e.nats != nil && e.nats.c != nil {
		e.nats.c.stop(5 * time.Second)
	}
	killPIDs(MarkedProcesses(e.runID))
	_ = os.RemoveAll(e.dir)
}

// StartAgent starts an agent with its own workspace root and waits for its
// first heartbeat.
func (e *Env) StartAgent(ctx context.Context, id string) (*agentProc, error) {
	root := filepath.Join(e.dir, "agents", id)
	if err := os.MkdirAll(filepath.Join(root, "ops"), 0o755); err != nil {
		return nil, err
	}
	return e.startAgentIn(ctx, id, root)
}

// startAgentIn starts (or restarts) agent id on root and waits for its first
// heartbeat.
func (e *Env) startAgentIn(ctx context.Context, id, root string) (*agentProc, error) {
	logf, err := os.OpenFile(filepath.Join(e.dir, id+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	started := time.Now()
	c, err := startChild(e.agentBin, []string{"run", "--nats-url", e.nats.url(), "--workspace-id", Workspace,
		"--agent-id", id, "--workspace-root", root, "--log-level", "warn"}, e.childEnv(), io.Discard, logf)
	if err != nil {
		return nil, err
	}
	a := &agentProc{ID: id, Root: root, c: c}
	e.mu.Lock()
	e.agents = append(e.agents, a)
	e.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := e.Monitor.WaitFor(wctx, id, started, EventHeartbeat); err != nil {
		return a, fmt.Errorf("agent %s: no first heartbeat: %w", id, err)
	}
	return a, nil
}

// stopAgents stops every agent the env started (SIGTERM, then SIGKILL of
// the group after grace; grace 0 kills at once).
func (e *Env) stopAgents(grace time.Duration) {
	e.mu.Lock()
	agents := e.agents
	e.agents = nil
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if grace == 0 {
				a.c.kill()
				return
			}
			a.c.stop(grace)
		}()
	}
	wg.Wait()
}

// Driver returns a driver for agent a recording into rec.
func (e *Env) Driver(a *agentProc, rec *Recorder, timeout time.Duration) *Driver {
	s, err := control.NewSession(control.SessionConfig{WorkspaceID: Workspace, AgentID: a.ID, RPC: e.rpc, Timeout: timeout, WorkingDir: a.Root})
	if err != nil {
		panic(err) // only missing ids fail, and they are set
	}
	return &Driver{Session: s, RPC: e.rpc, Rec: rec, Timeout: timeout}
}

// ensureNATS restarts the nats-server when a scenario left it down.
func (e *Env) ensureNATS(ctx context.Context) error {
	if e.nats.c != nil && !e.nats.c.exited() {
		_ = syscall.Kill(e.nats.c.pid(), syscall.SIGCONT)
		return nil
	}
	return e.nats.start(ctx)
}
