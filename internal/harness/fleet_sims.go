package harness

// Simulated machines for `harness fleet`. A simulated machine is what the
// platform sees of a real agent, without the agent's per-machine cost: one
// NATS connection through the auth callout (the enrollment bearer as the
// CONNECT token, a connection-instance name so the callout claims a lease,
// the agent's private inbox), the real agent's Hello and heartbeat messages
// on both the v1 and the connection-instance subjects, and the agent's own
// Dispatcher answering ping and an exec stub on both rpc subjects.
//
// What is shared to keep a machine light: one heartbeat scheduler for the
// whole fleet (each machine still beats once per interval, spread evenly),
// one host metrics sample per interval (agent/metrics), one Hello template
// built by the real agent (agent.Agent.Hello), and a small worker pool fed
// by channel subscriptions instead of a goroutine per subscription.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/agent/metrics"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/subject"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// FleetSimsCommand is the hidden subcommand under which the harness runs
// the simulated machines in their own process (so the platform process's
// memory is the platform's alone); FleetSimsEnv=1 selects the same mode in
// a test binary (see the package's TestMain).
const (
	FleetSimsCommand = "__fleet-sims"
	FleetSimsEnv     = "OPENGENI_FLEET_SIMS"
)

// simSpec is what the simulated machines need (the sims process reads it
// as JSON from its stdin).
type simSpec struct {
	URLs               []string      `json:"urls"`
	WorkspaceID        string        `json:"workspaceId"`
	Machines           []simMachine  `json:"machines"`
	Heartbeat          time.Duration `json:"heartbeat"`
	ConnectConcurrency int           `json:"connectConcurrency"`
	ConnectTimeout     time.Duration `json:"connectTimeout"`
	CPUProfile         string        `json:"cpuProfile,omitempty"` // the sims' own CPU profile
}

// simMachine is one enrolled machine: its id and enrollment bearer.
type simMachine struct {
	AgentID string `json:"agentId"`
	Bearer  string `json:"bearer"`
}

// simEvent is one report of the simulated machines to the coordinator (a
// JSON line on the sims process's stdout).
type simEvent struct {
	Type string `json:"type"` // started | connected | stats

	// started: heartbeat uptimes count from here (ingestion lag).
	EpochUnixMs int64 `json:"epochUnixMs,omitempty"`

	// connected: the connect phase is over.
	Connected      int         `json:"connected,omitempty"`
	Failed         int         `json:"failed,omitempty"`
	FirstError     string      `json:"firstError,omitempty"`
	ConnectSeconds float64     `json:"connectSeconds,omitempty"`
	ConnectP50Ms   float64     `json:"connectP50Ms,omitempty"`
	ConnectP99Ms   float64     `json:"connectP99Ms,omitempty"`
	ConnectMaxMs   float64     `json:"connectMaxMs,omitempty"`
	MemBefore      memSnapshot `json:"memBefore"`
	MemAfter       memSnapshot `json:"memAfter"`

	// stats: what the machines did, sent when they stop.
	Stats simStats `json:"stats"`
}

// simStats counts what the simulated machines did.
type simStats struct {
	HeartbeatsSent uint64 `json:"heartbeatsSent"`
	PingsServed    uint64 `json:"pingsServed"`
	ExecsServed    uint64 `json:"execsServed"`
	Disconnects    uint64 `json:"disconnects"`
	Reconnects     uint64 `json:"reconnects"`
	RPCDropped     uint64 `json:"rpcDropped"`  // requests lost to a full delivery queue (slow consumer)
	DialRetries    uint64 `json:"dialRetries"` // initial dials retried after a transient failure
}

// simRPCWorkers serve the fleet's rpc deliveries; simRPCQueue bounds them.
const (
	simRPCWorkers = 8
	simRPCQueue   = 1 << 16
)

// sim is one simulated machine.
type sim struct {
	id, inst  string
	bearer    string
	d         *agent.Dispatcher
	hello     []byte // the encoded Hello, sent at every (re)connect
	nc        atomic.Pointer[nats.Conn]
	seq       atomic.Uint64
	v1, conn  string // subject roots: agent.<ws>.<id> and …connection.<inst>
	connectMs float64
}

// simFleet runs the simulated machines.
type simFleet struct {
	spec  simSpec
	log   *slog.Logger
	epoch time.Time
	sims  []*sim
	// byRPC finds the machine a request was addressed to (v1 and
	// connection rpc subjects).
	byRPC map[string]*sim
	rpcCh chan *nats.Msg

	sampler *metrics.Sampler
	sample  atomic.Pointer[heartbeatSample]
	// stopping: the fleet closes its connections; their disconnects are
	// not counted.
	stopping atomic.Bool

	stats struct {
		heartbeats, pings, execs, disconnects, reconnects, dropped, dialRetries atomic.Uint64
	}
}

// heartbeatSample is the host sample every machine's heartbeat carries
// during one interval.
type heartbeatSample struct {
	metrics  *agentpb.MetricsSample
	capacity *agentpb.HostCapacitySample
}

func newSimFleet(spec simSpec, log *slog.Logger) (*simFleet, error) {
	if spec.Heartbeat <= 0 {
		spec.Heartbeat = 5 * time.Second
	}
	if spec.ConnectConcurrency <= 0 {
		spec.ConnectConcurrency = 64
	}
	if spec.ConnectTimeout <= 0 {
		spec.ConnectTimeout = 10 * time.Second
	}
	f := &simFleet{spec: spec, log: log, epoch: time.Now(), byRPC: make(map[string]*sim, 2*len(spec.Machines)),
		rpcCh: make(chan *nats.Msg, simRPCQueue)}
	template, err := simHelloTemplate(spec.WorkspaceID, log)
	if err != nil {
		return nil, err
	}
	f.sampler = metrics.New(template.GetWorkspaceRoot(), log)
	for i, m := range spec.Machines {
		s := &sim{id: m.AgentID, inst: uuid.NewString(), bearer: m.Bearer, d: agent.NewDispatcher(log, 2)}
		agent.Handle(s.d, "ping", agent.Inline, f.ping)
		agent.Handle(s.d, "exec", agent.Heavy, f.exec)
		s.v1 = subject.Machine(spec.WorkspaceID, s.id)
		s.conn = subject.Connection(spec.WorkspaceID, s.id, s.inst)
		h := proto.CloneOf(template)
		h.AgentId, h.MachineName = s.id, fmt.Sprintf("fleet-sim-%d", i)
		h.Capabilities.Exec = s.d.Serves("exec")
		if s.hello, err = proto.Marshal(h); err != nil {
			return nil, err
		}
		f.sims = append(f.sims, s)
		f.byRPC[s.v1+"."+subject.RPC], f.byRPC[s.conn+"."+subject.RPC] = s, s
	}
	return f, nil
}

// simHelloTemplate is the real agent's Hello (agent.Agent.Hello: version,
// OS, arch, workspace root, consent, binary sha256) with the capabilities a
// simulated machine serves: exec (a stub) and ping, nothing else.
func simHelloTemplate(ws string, log *slog.Logger) (*agentpb.Hello, error) {
	a, err := agent.New(agent.Options{Servers: []string{"nats://fleet-template.invalid"}, WorkspaceID: ws,
		AgentID: "fleet-template", Logger: log})
	if err != nil {
		return nil, err
	}
	h := a.Hello()
	c := h.Capabilities
	c.Filesystem, c.Git, c.Pty, c.OpStream, c.Desktop, c.Display = false, false, false, false, false, nil
	c.DesktopUnavailableReason = "simulated machine"
	return h, nil
}

// ping is the agent's ping answer (nonce echo, monotonic ms since start).
func (f *simFleet) ping(_ context.Context, req *agentpb.PingRequest) (*agentpb.PingResponse, error) {
	f.stats.pings.Add(1)
	return &agentpb.PingResponse{Nonce: req.GetNonce(), AgentMonotonicMs: uint64(time.Since(f.epoch).Milliseconds())}, nil
}

// exec is the exec stub: a shell that knows one command, "echo ARGS"
// (prints ARGS and a newline); anything else exits 127.
func (f *simFleet) exec(_ context.Context, req *agentpb.ExecRequest) (*agentpb.ExecResponse, error) {
	f.stats.execs.Add(1)
	line := strings.Join(req.GetCommand(), " ")
	if rest, ok := strings.CutPrefix(line, "echo"); ok && (rest == "" || rest[0] == ' ') {
		return &agentpb.ExecResponse{Stdout: []byte(strings.TrimPrefix(rest, " ") + "\n")}, nil
	}
	return &agentpb.ExecResponse{ExitCode: 127, Stderr: []byte("fleet sim: only echo is simulated\n")}, nil
}

// run connects every machine, reports, and serves until ctx ends.
func (f *simFleet) run(ctx context.Context, emit func(simEvent)) {
	emit(simEvent{Type: "started", EpochUnixMs: f.epoch.UnixMilli()})
	f.refreshSample(ctx)
	var wg sync.WaitGroup
	for range simRPCWorkers {
		wg.Go(func() { f.serveRPC(ctx) })
	}
	wg.Go(func() { f.heartbeats(ctx) })

	before := takeMem(false)
	start := time.Now()
	errs := f.connectAll(ctx)
	took := time.Since(start)
	after := takeMem(false)
	ev := simEvent{Type: "connected", Failed: len(errs), ConnectSeconds: took.Seconds(), MemBefore: before, MemAfter: after}
	ev.Connected = len(f.sims) - len(errs)
	if len(errs) > 0 {
		ev.FirstError = errs[0].Error()
	}
	var lat []time.Duration
	for _, s := range f.sims {
		if s.nc.Load() != nil {
			lat = append(lat, time.Duration(s.connectMs*float64(time.Millisecond)))
		}
	}
	slices.Sort(lat)
	ev.ConnectP50Ms, ev.ConnectP99Ms = Millis(Percentile(lat, 50)), Millis(Percentile(lat, 99))
	if len(lat) > 0 {
		ev.ConnectMaxMs = Millis(lat[len(lat)-1])
	}
	emit(ev)

	<-ctx.Done()
	f.stopping.Store(true)
	f.closeAll()
	wg.Wait()
	emit(simEvent{Type: "stats", Stats: simStats{HeartbeatsSent: f.stats.heartbeats.Load(), PingsServed: f.stats.pings.Load(),
		ExecsServed: f.stats.execs.Load(), Disconnects: f.stats.disconnects.Load(), Reconnects: f.stats.reconnects.Load(),
		RPCDropped: f.stats.dropped.Load(), DialRetries: f.stats.dialRetries.Load()}})
}

// closeAll closes every machine's connection, a few at a time.
func (f *simFleet) closeAll() {
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range min(f.spec.ConnectConcurrency, len(f.sims)) {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(f.sims); i = int(next.Add(1)) - 1 {
				if nc := f.sims[i].nc.Load(); nc != nil {
					nc.Close()
				}
			}
		})
	}
	wg.Wait()
}

// connectAll connects the machines, ConnectConcurrency at a time, and
// returns the failures.
func (f *simFleet) connectAll(ctx context.Context) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan *sim)
	for range min(f.spec.ConnectConcurrency, len(f.sims)) {
		wg.Go(func() {
			for s := range work {
				if err := f.connect(ctx, s); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("machine %s: %w", s.id, err))
					mu.Unlock()
				}
			}
		})
	}
	for _, s := range f.sims {
		if ctx.Err() != nil {
			break
		}
		work <- s
	}
	close(work)
	wg.Wait()
	return errs
}

// connect dials one machine through the auth callout, subscribes its rpc
// subjects, then announces it (the agent's order: Hello only once a request
// has a responder).
func (f *simFleet) connect(ctx context.Context, s *sim) error {
	start := time.Now()
	nc, err := f.dial(ctx, s)
	if err != nil {
		return err
	}
	for _, root := range []string{s.v1, s.conn} {
		if _, err := nc.ChanSubscribe(root+"."+subject.RPC, f.rpcCh); err != nil {
			nc.Close()
			return err
		}
	}
	s.nc.Store(nc)
	if err := f.announce(s, nc); err != nil {
		s.nc.Store(nil)
		nc.Close()
		return err
	}
	s.connectMs = float64(time.Since(start)) / float64(time.Millisecond)
	return nil
}

// simDialAttempts bounds a machine's initial dial: the agent retries
// forever, a simulated machine retries transient failures (a handshake
// timing out behind a long callout queue) a few times and then counts as
// failed; a refused bearer is not retried.
const simDialAttempts = 5

// dial opens a machine's connection through the auth callout.
func (f *simFleet) dial(ctx context.Context, s *sim) (*nats.Conn, error) {
	policy := backoff.Standard()
	for attempt := 1; ; attempt++ {
		nc, err := f.dialOnce(s)
		if err == nil || errors.Is(err, nats.ErrAuthorization) || attempt == simDialAttempts {
			return nc, err
		}
		f.stats.dialRetries.Add(1)
		if err := backoff.SleepCtx(ctx, backoff.Jitter(policy.Ceiling(attempt))); err != nil {
			return nil, err
		}
	}
}

func (f *simFleet) dialOnce(s *sim) (*nats.Conn, error) {
	return nats.Connect(strings.Join(f.spec.URLs, ","),
		nats.Name(subject.ConnectionNamePrefix+s.inst),
		nats.CustomInboxPrefix(subject.AgentInboxPrefix(f.spec.WorkspaceID, s.id)),
		nats.Token(s.bearer),
		nats.Timeout(f.spec.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			if !f.stopping.Load() {
				f.stats.disconnects.Add(1)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			f.stats.reconnects.Add(1)
			if err := f.announce(s, nc); err != nil {
				f.log.Warn("fleet sim: hello after reconnect", "agent", s.id, "err", err)
			}
		}),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			switch {
			case errors.Is(err, nats.ErrAuthExpired):
				_ = nc.ForceReconnect() // the connection JWT's rotation, as the agent does
			case errors.Is(err, nats.ErrSlowConsumer):
				f.stats.dropped.Add(1)
			default:
				f.log.Debug("fleet sim: nats error", "agent", s.id, "err", err)
			}
		}),
	)
}

// announce sends the Hello and the first heartbeat (the agent beats at
// once after each connect) and flushes.
func (f *simFleet) announce(s *sim, nc *nats.Conn) error {
	s.seq.Store(0)
	if err := publishBoth(nc, s, subject.Hello, s.hello); err != nil {
		return err
	}
	if err := f.beat(s, nc); err != nil {
		return err
	}
	return nc.FlushTimeout(f.spec.ConnectTimeout)
}

// publishBoth publishes on the v1 subject and the connection instance's,
// as the agent does.
func publishBoth(nc *nats.Conn, s *sim, suffix string, b []byte) error {
	if err := nc.Publish(s.v1+"."+suffix, b); err != nil {
		return err
	}
	return nc.Publish(s.conn+"."+suffix, b)
}

// beat publishes one heartbeat of s (the agent's AgentEvent, with the
// interval's shared host sample: only heartbeats with metrics are
// ingested). UptimeMs counts from the fleet's epoch, so the coordinator can
// tell when a heartbeat was sent.
func (f *simFleet) beat(s *sim, nc *nats.Conn) error {
	hs := f.sample.Load()
	ev := &agentpb.AgentEvent{AgentId: s.id, Event: &agentpb.AgentEvent_Heartbeat{Heartbeat: &agentpb.Heartbeat{
		Seq:            s.seq.Add(1),
		UptimeMs:       uint64(time.Since(f.epoch).Milliseconds()),
		ActiveSessions: uint32(s.d.Active()),
		Metrics:        hs.metrics,
		Draining:       s.d.Draining(),
		Capacity:       hs.capacity,
	}}}
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	if err := publishBoth(nc, s, subject.Events, b); err != nil {
		return err
	}
	f.stats.heartbeats.Add(1)
	return nil
}

func (f *simFleet) refreshSample(ctx context.Context) {
	f.sample.Store(&heartbeatSample{metrics: f.sampler.Sample(ctx), capacity: f.sampler.Capacity(ctx)})
}

// heartbeatTick is the scheduler's step: each tick beats the machines of
// one slot, so a machine beats once per interval and the fleet's beats are
// spread over it.
const heartbeatTick = 50 * time.Millisecond

// heartbeats beats every connected machine once per interval.
func (f *simFleet) heartbeats(ctx context.Context) {
	slots := max(1, int(f.spec.Heartbeat/heartbeatTick))
	t := time.NewTicker(f.spec.Heartbeat / time.Duration(slots))
	defer t.Stop()
	for k := 0; ; k++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		slot := k % slots
		if slot == 0 {
			f.refreshSample(ctx)
		}
		for i := slot; i < len(f.sims); i += slots {
			s := f.sims[i]
			if nc := s.nc.Load(); nc != nil && nc.IsConnected() {
				if err := f.beat(s, nc); err != nil {
					f.log.Debug("fleet sim: heartbeat", "agent", s.id, "err", err)
				}
			}
		}
	}
}

// serveRPC answers requests through the addressed machine's Dispatcher.
func (f *simFleet) serveRPC(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-f.rpcCh:
			s := f.byRPC[m.Subject]
			if s == nil || m.Reply == "" {
				continue
			}
			nc := s.nc.Load()
			if nc == nil {
				continue
			}
			out := s.d.Serve(ctx, s.d.Accept(m.Data), int(nc.MaxPayload()))
			if err := m.Respond(out); err != nil {
				f.log.Debug("fleet sim: reply", "agent", s.id, "err", err)
			}
		}
	}
}

// runSims runs the simulated machines until ctx ends.
func runSims(ctx context.Context, spec simSpec, log *slog.Logger, emit func(simEvent)) error {
	f, err := newSimFleet(spec, log)
	if err != nil {
		return err
	}
	if _, err := ensureFDLimit(len(spec.Machines) + 256); err != nil {
		return err
	}
	if spec.CPUProfile != "" {
		stop, err := startCPUProfile(spec.CPUProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	f.run(ctx, emit)
	return nil
}

// ServeFleetSims is the sims process: it reads the spec (JSON) from in,
// writes its events as JSON lines to out, and stops its machines when in
// reaches EOF (the coordinator closed it, or died).
func ServeFleetSims(in io.Reader, out io.Writer, log *slog.Logger) error {
	br := bufio.NewReader(in)
	var spec simSpec
	if err := json.NewDecoder(br).Decode(&spec); err != nil {
		return fmt.Errorf("fleet sims: spec: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, in)
		cancel()
	}()
	var mu sync.Mutex
	enc := json.NewEncoder(out)
	return runSims(ctx, spec, log, func(ev simEvent) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(ev); err != nil {
			log.Warn("fleet sims: report", "err", err)
		}
	})
}

// simsRunner runs the simulated machines: in a child process (default
// against the in-process platform) or in this one.
type simsRunner struct {
	events chan simEvent
	halt   func()       // asks the machines to stop
	wait   func() error // once events is closed
}

// next returns the next event of type typ (skipping others).
func (r *simsRunner) next(ctx context.Context, typ string) (simEvent, error) {
	for {
		select {
		case <-ctx.Done():
			return simEvent{}, ctx.Err()
		case ev, ok := <-r.events:
			if !ok {
				return simEvent{}, fmt.Errorf("fleet: the simulated machines stopped before %q", typ)
			}
			if ev.Type == typ {
				return ev, nil
			}
		}
	}
}

// stop stops the machines and returns their final stats.
func (r *simsRunner) stop() (simStats, error) {
	r.halt()
	var st simStats
	for ev := range r.events {
		if ev.Type == "stats" {
			st = ev.Stats
		}
	}
	return st, r.wait()
}

// simsStopGrace is how long the sims process may take to stop (closing
// thousands of connections on a loaded machine is slow).
const simsStopGrace = 2 * time.Minute

// startSimsProcess runs the machines in a child process (this executable,
// FleetSimsCommand) and relays its events.
func startSimsProcess(spec simSpec) (*simsRunner, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, FleetSimsCommand)
	cmd.Env = append(os.Environ(), FleetSimsEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("fleet: start the sims process: %w", err)
	}
	r := &simsRunner{events: make(chan simEvent, 4)}
	go func() {
		defer close(r.events)
		dec := json.NewDecoder(stdout)
		for {
			var ev simEvent
			if err := dec.Decode(&ev); err != nil {
				return
			}
			r.events <- ev
		}
	}()
	var killer *time.Timer
	r.halt = func() {
		_ = stdin.Close()
		killer = time.AfterFunc(simsStopGrace, func() { _ = cmd.Process.Kill() })
	}
	r.wait = func() error {
		err := cmd.Wait()
		killer.Stop()
		if err != nil {
			return fmt.Errorf("fleet: sims process: %w", err)
		}
		return nil
	}
	if err := json.NewEncoder(stdin).Encode(spec); err != nil {
		_, _ = r.stop()
		return nil, fmt.Errorf("fleet: send the spec: %w", err)
	}
	return r, nil
}

// startSimsInProcess runs the machines in this process.
func startSimsInProcess(spec simSpec, log *slog.Logger) *simsRunner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &simsRunner{events: make(chan simEvent, 4), halt: cancel}
	done := make(chan error, 1)
	go func() {
		defer close(r.events)
		done <- runSims(ctx, spec, log, func(ev simEvent) { r.events <- ev })
	}()
	r.wait = func() error { return <-done }
	return r
}
