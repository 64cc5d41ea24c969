package harness

// `harness fleet`: N simulated machines (fleet_sims.go) against a real
// platform, in-process by default (fleet_platform.go) or external. The
// machines are enrolled through the store the way the enrollment API
// finalizes a pairing (store.UpsertEnrollment, then the bearer minted as
// the API does), and connect through the real auth callout.
//
// The run: enroll → start the machines (a child process, so the platform
// process's memory is the platform's) → every machine connected →
// every Hello and a first heartbeat ingested → a window measuring
// heartbeat ingestion → one ping per machine through the control library
// → an exec sample → memory → stop.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/opengeni/opengeni-agent/agent/config"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/control/enroll"
	"github.com/opengeni/opengeni-agent/control/store"
	"github.com/opengeni/opengeni-agent/internal/backoff"
)

// FleetConfig is one fleet run.
type FleetConfig struct {
	Machines  int           // simulated machines; required
	Heartbeat time.Duration // each machine's heartbeat interval (default 5s, the agent's)
	// Window is how long heartbeat ingestion is measured once every
	// machine was ingested (default 30s).
	Window time.Duration
	// Settle bounds the wait for every Hello and first heartbeat to be
	// ingested (default 60s plus 20ms a machine).
	Settle             time.Duration
	ConnectConcurrency int // machines dialing at once (default 64)
	PingConcurrency    int // pings in flight (default 32)
	// SimsInProcess runs the machines in this process rather than a child
	// (always so against an external platform).
	SimsInProcess bool
	// CPUProfile, when set, receives this process's CPU profile of the run
	// (the platform's, with an in-process platform); SimsCPUProfile the
	// simulated machines'.
	CPUProfile, SimsCPUProfile string
	// DataDir holds the in-process platform's state ("" = a temporary
	// directory, removed after).
	DataDir string
	// External, when set, is the platform to run against instead of an
	// in-process one.
	External *ExternalPlatform
	Logger   *slog.Logger
}

// ExternalPlatform is a running platform: its NATS cluster, the control
// user (store and control plane), and the enrollment signing secret.
type ExternalPlatform struct {
	URLs            []string
	ControlUser     string
	ControlPassword string
	SigningSecret   string
	WorkspaceID     string // default: a new random one
	StorePrefix     string // the store's bucket prefix (default "opengeni")
	MonitorURL      string // nats-server monitoring (http://host:8222), optional: varz
}

// fleetTarget is the platform a fleet runs against.
type fleetTarget struct {
	Description    string
	URLs           []string
	WorkspaceID    string
	SigningSecret  string
	ControlOptions []nats.Option
	Store          *store.Store
	StorePrefix    string
	InProcess      bool
	Varz           func(context.Context) (*server.Varz, error) // nil: unknown
	Close          func()
	// AsExternal is how another process reaches this platform (an
	// in-process one only): what `harness fleet --nats-url …` would take.
	AsExternal ExternalPlatform
}

// FleetReport is what a fleet run measured.
type FleetReport struct {
	Started    time.Time `json:"started"`
	Host       HostInfo  `json:"host"`
	LoadBefore string    `json:"loadBefore"` // /proc/loadavg at start and end
	LoadAfter  string    `json:"loadAfter"`
	Platform   string    `json:"platform"`
	Sims       string    `json:"sims"`
	FDLimit    uint64    `json:"fdLimit"`
	Machines   int       `json:"machines"`
	HeartbeatS float64   `json:"heartbeatIntervalS"`

	EnrollSeconds float64 `json:"enrollSeconds"`
	EnrollPerS    float64 `json:"enrollPerS"`

	Connect FleetConnect `json:"connect"`
	Ingest  FleetIngest  `json:"ingest"`
	Ping    FleetPing    `json:"ping"`
	Exec    FleetExec    `json:"exec"`
	Memory  FleetMemory  `json:"memory"`
	NATS    *FleetNATS   `json:"nats,omitempty"`
	SimStat simStats     `json:"simStats"`

	CPUProfile string   `json:"cpuProfile,omitempty"`
	Pass       bool     `json:"pass"`
	Problems   []string `json:"problems,omitempty"`
}

// FleetConnect is the connect phase, measured by the machines: dial,
// CONNECT through the auth callout, subscribe, Hello flushed.
type FleetConnect struct {
	Connected  int     `json:"connected"`
	Failed     int     `json:"failed"`
	FirstError string  `json:"firstError,omitempty"`
	Seconds    float64 `json:"seconds"`
	PerS       float64 `json:"perS"`
	P50Ms      float64 `json:"p50Ms"`
	P99Ms      float64 `json:"p99Ms"`
	MaxMs      float64 `json:"maxMs"`
}

// FleetIngest is what the store wrote (the machines bucket's watch).
type FleetIngest struct {
	Hellos        int     `json:"hellos"`
	Beaten        int     `json:"machinesWithHeartbeat"`
	SettleSeconds float64 `json:"settleSeconds"` // from start to every machine ingested
	WindowSeconds float64 `json:"windowSeconds"`
	Heartbeats    uint64  `json:"heartbeatsInWindow"`
	PerS          float64 `json:"heartbeatsPerS"`
	ExpectedPerS  float64 `json:"expectedPerS"` // machines / interval
	LagP50Ms      float64 `json:"lagP50Ms"`     // sent → written
	LagP99Ms      float64 `json:"lagP99Ms"`
	// TotalHeartbeats is every distinct heartbeat ingested over the run
	// (counted once ingestion went quiet after the machines stopped), to
	// compare with the heartbeats the machines sent (simStats).
	TotalHeartbeats uint64 `json:"totalHeartbeats"`
	// StoreHellos and StoreBeaten are the machines whose record has a
	// Hello / a heartbeat when read back from the store at the end (a
	// check of the watch).
	StoreHellos int `json:"storeHellos"`
	StoreBeaten int `json:"storeBeaten"`
}

// FleetPing is one control-plane ping per machine.
type FleetPing struct {
	Sent       int     `json:"sent"`
	Answered   int     `json:"answered"`
	FirstError string  `json:"firstError,omitempty"`
	P50Ms      float64 `json:"p50Ms"`
	P99Ms      float64 `json:"p99Ms"`
	MaxMs      float64 `json:"maxMs"`
}

// FleetExec is the exec stub sample.
type FleetExec struct {
	Sent       int    `json:"sent"`
	OK         int    `json:"ok"`
	FirstError string `json:"firstError,omitempty"`
}

// FleetMemory is memory per machine: deltas from before the machines
// connected to after the window, divided by the machines connected.
type FleetMemory struct {
	How string `json:"how"`
	// Platform process (in-process platform only).
	PlatformHeapKiB       float64 `json:"platformHeapKiBPerMachine"`
	PlatformStackKiB      float64 `json:"platformStackKiBPerMachine"`
	PlatformRSSKiB        float64 `json:"platformRssKiBPerMachine"`
	PlatformGoroutines    float64 `json:"platformGoroutinesPerMachine"`
	NATSServerHeapKiB     float64 `json:"natsServerHeapKiBPerConn"`
	NATSServerTotalKiB    float64 `json:"natsServerKiBPerConn"` // heap share + the platform's stack growth
	PlatformRSSTotalMiB   float64 `json:"platformRssMiB"`
	SimsHeapKiB           float64 `json:"simsHeapKiBPerMachine"`
	SimsRSSKiB            float64 `json:"simsRssKiBPerMachine"`
	SimsGoroutines        float64 `json:"simsGoroutinesPerMachine"`
	NATSVarzMemPerConnKiB float64 `json:"natsVarzMemKiBPerConn,omitempty"` // external: varz mem delta / connections delta
}

// FleetNATS is nats-server's varz after the window.
type FleetNATS struct {
	Connections   int     `json:"connections"`
	Subscriptions uint32  `json:"subscriptions"`
	SlowConsumers int64   `json:"slowConsumers"`
	InMsgs        int64   `json:"inMsgs"`
	OutMsgs       int64   `json:"outMsgs"`
	MemMiB        float64 `json:"memMiB"`
}

// RunFleet runs a fleet and reports what it measured. The report is
// returned (partial) with an error when the run could not finish.
func RunFleet(ctx context.Context, cfg FleetConfig) (*FleetReport, error) {
	if cfg.Machines <= 0 {
		return nil, errors.New("fleet: the number of machines must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Heartbeat = cmpOr(cfg.Heartbeat, 5*time.Second)
	cfg.Window = cmpOr(cfg.Window, 30*time.Second)
	cfg.Settle = cmpOr(cfg.Settle, 60*time.Second+time.Duration(cfg.Machines)*20*time.Millisecond)
	cfg.ConnectConcurrency = cmpOr(cfg.ConnectConcurrency, 64)
	cfg.PingConcurrency = cmpOr(cfg.PingConcurrency, 32)
	log := cfg.Logger.With("component", "fleet")
	rep := &FleetReport{Started: time.Now().UTC(), Machines: cfg.Machines, HeartbeatS: cfg.Heartbeat.Seconds(),
		LoadBefore: loadAverage(), Host: HostInfo{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVer: runtime.Version()}}
	inProcess := cfg.External == nil
	if inProcess {
		runtime.MemProfileRate = fleetMemProfileRate
	}
	var err error
	if rep.FDLimit, err = ensureFDLimit(cfg.Machines + 512); err != nil {
		return rep, err
	}
	if cfg.CPUProfile != "" {
		stop, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return rep, err
		}
		defer stop()
		rep.CPUProfile = cfg.CPUProfile
	}

	target, cleanup, err := openTarget(ctx, cfg, log)
	if err != nil {
		return rep, err
	}
	defer cleanup()
	rep.Platform = target.Description

	start := time.Now()
	machines, err := enrollFleet(ctx, target, cfg.Machines)
	if err != nil {
		return rep, err
	}
	rep.EnrollSeconds = time.Since(start).Seconds()
	rep.EnrollPerS = float64(cfg.Machines) / rep.EnrollSeconds
	log.Info("machines enrolled", "n", cfg.Machines, "seconds", rep.EnrollSeconds)
	agents := make([]string, len(machines))
	for i, m := range machines {
		agents[i] = m.AgentID
	}

	measureNC, err := nats.Connect(strings.Join(target.URLs, ","), append([]nats.Option{nats.Name("opengeni-harness-fleet")},
		target.ControlOptions...)...)
	if err != nil {
		return rep, fmt.Errorf("fleet: control connection: %w", err)
	}
	defer measureNC.Close()
	js, err := jetstream.New(measureNC)
	if err != nil {
		return rep, err
	}
	watch, err := watchIngestion(ctx, js, target.StorePrefix, target.WorkspaceID, agents)
	if err != nil {
		return rep, err
	}
	defer watch.stop()
	memBefore := takeMem(inProcess)
	varzBefore := readVarz(ctx, target, log)

	spec := simSpec{URLs: target.URLs, WorkspaceID: target.WorkspaceID, Machines: machines, Heartbeat: cfg.Heartbeat,
		ConnectConcurrency: cfg.ConnectConcurrency, CPUProfile: cfg.SimsCPUProfile}
	var sims *simsRunner
	if cfg.SimsInProcess || !inProcess {
		rep.Sims = "in this process"
		sims = startSimsInProcess(spec, cfg.Logger)
	} else {
		rep.Sims = "child process (" + FleetSimsCommand + ")"
		if sims, err = startSimsProcess(spec); err != nil {
			return rep, err
		}
	}
	var stopOnce sync.Once
	stopSims := func() {
		stopOnce.Do(func() {
			st, err := sims.stop()
			rep.SimStat = st
			if err != nil {
				rep.Problems = append(rep.Problems, err.Error())
			}
		})
	}
	defer stopSims()

	started, err := sims.next(ctx, "started")
	if err != nil {
		return rep, err
	}
	watch.setEpoch(time.UnixMilli(started.EpochUnixMs))
	connected, err := sims.next(ctx, "connected")
	if err != nil {
		return rep, err
	}
	rep.Connect = FleetConnect{Connected: connected.Connected, Failed: connected.Failed, FirstError: connected.FirstError,
		Seconds: connected.ConnectSeconds, P50Ms: connected.ConnectP50Ms, P99Ms: connected.ConnectP99Ms, MaxMs: connected.ConnectMaxMs}
	if connected.ConnectSeconds > 0 {
		rep.Connect.PerS = float64(connected.Connected) / connected.ConnectSeconds
	}
	log.Info("machines connected", "connected", connected.Connected, "failed", connected.Failed, "seconds", connected.ConnectSeconds)

	settleCtx, cancel := context.WithTimeout(ctx, cfg.Settle)
	err = watch.waitAll(settleCtx, 3*cfg.Heartbeat)
	cancel()
	c, _ := watch.counts(true)
	rep.Ingest.Hellos, rep.Ingest.Beaten = c.Hellos, c.Beaten
	rep.Ingest.SettleSeconds = time.Since(start).Seconds() - rep.EnrollSeconds
	if err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("%v: %d/%d hellos and %d/%d first heartbeats ingested",
			err, c.Hellos, cfg.Machines, c.Beaten, cfg.Machines))
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	log.Info("machines ingested", "hellos", c.Hellos, "heartbeats", c.Beaten)

	// The ingestion window, after one interval of warm-up (the connect
	// phase's backlog drains first, so the window sees the steady state).
	if err := backoff.SleepCtx(ctx, cfg.Heartbeat); err != nil {
		return rep, err
	}
	c0, _ := watch.counts(true)
	windowStart := time.Now()
	if err := backoff.SleepCtx(ctx, cfg.Window); err != nil {
		return rep, err
	}
	c1, lags := watch.counts(true)
	window := time.Since(windowStart)
	slices.Sort(lags)
	rep.Ingest.WindowSeconds = window.Seconds()
	rep.Ingest.Heartbeats = c1.Heartbeats - c0.Heartbeats
	rep.Ingest.PerS = float64(rep.Ingest.Heartbeats) / window.Seconds()
	rep.Ingest.ExpectedPerS = float64(rep.Connect.Connected) / cfg.Heartbeat.Seconds()
	rep.Ingest.LagP50Ms, rep.Ingest.LagP99Ms = Millis(Percentile(lags, 50)), Millis(Percentile(lags, 99))
	log.Info("ingestion measured", "heartbeats_per_s", rep.Ingest.PerS, "expected_per_s", rep.Ingest.ExpectedPerS)

	// Pings and the exec sample, through the control library.
	rpc := control.NewNATSRPC(control.DialNATS(strings.Join(target.URLs, ","), target.ControlOptions...))
	defer rpc.Close()
	pings, err := pingFleet(ctx, rpc, target.Store, target.WorkspaceID, agents, cfg.PingConcurrency, 10*time.Second)
	rep.Ping = FleetPing{Sent: len(pings.latencies) + pings.failed, Answered: len(pings.latencies),
		P50Ms: Millis(Percentile(pings.latencies, 50)), P99Ms: Millis(Percentile(pings.latencies, 99))}
	if n := len(pings.latencies); n > 0 {
		rep.Ping.MaxMs = Millis(pings.latencies[n-1])
	}
	if pings.firstError != nil {
		rep.Ping.FirstError = pings.firstError.Error()
	}
	if err != nil {
		return rep, err
	}
	rep.Exec.Sent = min(fleetExecSample, len(agents))
	ok, execErr := execSample(ctx, rpc, target.Store, target.WorkspaceID, agents, fleetExecSample, 10*time.Second)
	rep.Exec.OK = ok
	if execErr != nil {
		rep.Exec.FirstError = execErr.Error()
	}

	memAfter := takeMem(inProcess)
	varzAfter := readVarz(ctx, target, log)
	rep.Memory = fleetMemory(inProcess, rep.Connect.Connected, memBefore, memAfter, connected.MemBefore, connected.MemAfter,
		varzBefore, varzAfter)
	if varzAfter != nil {
		rep.NATS = &FleetNATS{Connections: varzAfter.Connections, Subscriptions: varzAfter.Subscriptions,
			SlowConsumers: varzAfter.SlowConsumers, InMsgs: varzAfter.InMsgs, OutMsgs: varzAfter.OutMsgs,
			MemMiB: float64(varzAfter.Mem) / (1 << 20)}
	}
	stopSims()
	watch.quiesce(ctx, 2*time.Second, 30*time.Second)
	final, _ := watch.counts(false)
	rep.Ingest.TotalHeartbeats = final.Heartbeats
	if rep.Ingest.StoreHellos, rep.Ingest.StoreBeaten, err = storeCount(ctx, target.Store, target.WorkspaceID, agents); err != nil {
		rep.Problems = append(rep.Problems, "reading the machines back: "+err.Error())
	}
	rep.LoadAfter = loadAverage()
	rep.decide()
	return rep, nil
}

// fleetExecSample is how many machines run the exec stub.
const fleetExecSample = 20

func cmpOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// openTarget starts the in-process platform (in a temporary data
// directory unless one is given) or binds to the external one.
func openTarget(ctx context.Context, cfg FleetConfig, log *slog.Logger) (*fleetTarget, func(), error) {
	if cfg.External != nil {
		t, err := dialExternal(ctx, *cfg.External)
		if err != nil {
			return nil, nil, err
		}
		return t, t.Close, nil
	}
	dir, removeDir := cfg.DataDir, func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", "opengeni-fleet-")
		if err != nil {
			return nil, nil, err
		}
		dir, removeDir = d, func() { _ = os.RemoveAll(d) }
	}
	// The platform logs every denied or refused machine; at the fleet's
	// scale only warnings are worth a line.
	t, err := startLocalPlatform(ctx, dir, quieter(log))
	if err != nil {
		removeDir()
		return nil, nil, err
	}
	return t, func() { t.Close(); removeDir() }, nil
}

// quieter is log at Warn and above.
func quieter(log *slog.Logger) *slog.Logger {
	return slog.New(minLevel{log.Handler(), slog.LevelWarn})
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// dialExternal binds to an external platform's store as the control user.
func dialExternal(ctx context.Context, e ExternalPlatform) (*fleetTarget, error) {
	if len(e.URLs) == 0 || e.ControlUser == "" || e.SigningSecret == "" {
		return nil, errors.New("fleet: an external platform needs NATS URLs, the control user and the signing secret")
	}
	if e.WorkspaceID == "" {
		e.WorkspaceID = uuid.NewString()
	}
	opts := []nats.Option{nats.UserInfo(e.ControlUser, e.ControlPassword), nats.CustomInboxPrefix(control.InboxPrefix)}
	nc, err := nats.Connect(strings.Join(e.URLs, ","), append(opts, nats.Name("opengeni-harness-fleet-store"))...)
	if err != nil {
		return nil, fmt.Errorf("fleet: connect as the control user: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	st, err := store.Open(ctx, js, store.Options{Prefix: e.StorePrefix})
	if err != nil {
		nc.Close()
		return nil, err
	}
	t := &fleetTarget{Description: "external platform " + strings.Join(e.URLs, ","), URLs: e.URLs, WorkspaceID: e.WorkspaceID,
		SigningSecret: e.SigningSecret, ControlOptions: opts, Store: st, StorePrefix: e.StorePrefix, Close: nc.Close}
	if e.MonitorURL != "" {
		url := strings.TrimSuffix(e.MonitorURL, "/") + "/varz"
		t.Varz = func(ctx context.Context) (*server.Varz, error) { return fetchVarz(ctx, url) }
	}
	return t, nil
}

func fetchVarz(ctx context.Context, url string) (*server.Varz, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fleet: %s: %s", url, resp.Status)
	}
	var v server.Varz
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&v); err != nil {
		return nil, fmt.Errorf("fleet: %s: %w", url, err)
	}
	return &v, nil
}

func readVarz(ctx context.Context, t *fleetTarget, log *slog.Logger) *server.Varz {
	if t.Varz == nil {
		return nil
	}
	v, err := t.Varz(ctx)
	if err != nil {
		log.Warn("varz", "err", err)
		return nil
	}
	return v
}

// enrollWorkers enroll machines concurrently.
const enrollWorkers = 16

// enrollFleet enrolls n machines the way a pairing finalizes (a fresh
// ed25519 identity each, store.UpsertEnrollment) and mints each its
// bearer as the enrollment API does.
func enrollFleet(ctx context.Context, t *fleetTarget, n int) ([]simMachine, error) {
	out := make([]simMachine, n)
	var (
		next     atomic.Int64
		firstErr error
		mu       sync.Mutex
		wg       sync.WaitGroup
	)
	for range min(enrollWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				m, err := enrollOne(ctx, t, i)
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					return
				}
				out[i] = m
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func enrollOne(ctx context.Context, t *fleetTarget, i int) (simMachine, error) {
	id, err := config.GenerateIdentity()
	if err != nil {
		return simMachine{}, err
	}
	e, err := t.Store.UpsertEnrollment(ctx, store.FinalizeInput{WorkspaceID: t.WorkspaceID, Pubkey: id.PublicKey(),
		OS: "linux", Arch: "x86_64", MachineName: fmt.Sprintf("fleet-sim-%d", i)})
	if err != nil {
		return simMachine{}, fmt.Errorf("fleet: enroll machine %d: %w", i, err)
	}
	bearer, _, err := enroll.MintBearerGeneration(t.SigningSecret, e.WorkspaceID, e.ID, e.Generation(), time.Now())
	if err != nil {
		return simMachine{}, err
	}
	return simMachine{AgentID: e.ID, Bearer: bearer}, nil
}

// fleetMemory divides the memory deltas by the machines connected.
func fleetMemory(inProcess bool, n int, before, after, simsBefore, simsAfter memSnapshot, varzBefore, varzAfter *server.Varz) FleetMemory {
	m := FleetMemory{}
	if n == 0 {
		return m
	}
	per := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) / 1024 }
	if inProcess {
		m.How = "platform process (this one: embedded nats-server, callout, store, ingestion, plus the harness's watch and pinger): " +
			"runtime.MemStats HeapInuse/StackInuse and /proc VmRSS after two GCs, before the machines started vs after the window, / machines. " +
			"nats-server: the in-use heap of allocation sites under nats-server code (runtime heap profile at 16 KiB sampling, scaled as pprof does) " +
			"plus the platform's stack growth (its new goroutines are nats-server's client read/write loops), / connections. " +
			"Sims: the same statistics in the machines' process, before vs after connecting."
		m.PlatformHeapKiB = per(before.HeapInuse, after.HeapInuse)
		m.PlatformStackKiB = per(before.StackInuse, after.StackInuse)
		m.PlatformRSSKiB = (after.RSSKiB - before.RSSKiB) / float64(n)
		m.PlatformGoroutines = float64(after.Goroutines-before.Goroutines) / float64(n)
		m.NATSServerHeapKiB = per(before.NATSServerHeap, after.NATSServerHeap)
		m.NATSServerTotalKiB = m.NATSServerHeapKiB + m.PlatformStackKiB
		m.PlatformRSSTotalMiB = after.RSSKiB / 1024
	} else {
		m.How = "external platform: nats-server varz mem (process RSS) delta / connections delta when --nats-monitor is given; " +
			"sims: runtime.MemStats and /proc VmRSS in this process before vs after connecting."
		if varzBefore != nil && varzAfter != nil && varzAfter.Connections > varzBefore.Connections {
			m.NATSVarzMemPerConnKiB = float64(varzAfter.Mem-varzBefore.Mem) / float64(varzAfter.Connections-varzBefore.Connections) / 1024
		}
	}
	m.SimsHeapKiB = per(simsBefore.HeapInuse, simsAfter.HeapInuse)
	m.SimsRSSKiB = (simsAfter.RSSKiB - simsBefore.RSSKiB) / float64(n)
	m.SimsGoroutines = float64(simsAfter.Goroutines-simsBefore.Goroutines) / float64(n)
	return m
}

// startCPUProfile writes this process's CPU profile to path until the
// returned stop is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// decide passes the run when every machine connected, was ingested and
// answered its ping, and the exec sample answered right.
func (r *FleetReport) decide() {
	check := func(ok bool, format string, args ...any) {
		if !ok {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	check(r.Connect.Connected == r.Machines, "%d/%d machines connected (%s)", r.Connect.Connected, r.Machines, r.Connect.FirstError)
	check(r.Ingest.Hellos == r.Machines, "%d/%d hellos ingested", r.Ingest.Hellos, r.Machines)
	check(r.Ingest.Beaten == r.Machines, "%d/%d machines had a heartbeat ingested", r.Ingest.Beaten, r.Machines)
	check(r.Ping.Answered == r.Machines, "%d/%d machines answered ping (%s)", r.Ping.Answered, r.Machines, r.Ping.FirstError)
	check(r.Exec.OK == r.Exec.Sent, "%d/%d exec stubs answered right (%s)", r.Exec.OK, r.Exec.Sent, r.Exec.FirstError)
	r.Pass = len(r.Problems) == 0
}

// WriteJSON writes the report as indented JSON.
func (r *FleetReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteSummary writes the report as text.
func (r *FleetReport) WriteSummary(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("fleet: %d simulated machines, heartbeat every %gs", r.Machines, r.HeartbeatS)
	p("  platform     %s", r.Platform)
	p("  machines     %s; open-files limit %d", r.Sims, r.FDLimit)
	p("  host         %s/%s, %d CPUs, %s; load %s → %s", r.Host.OS, r.Host.Arch, r.Host.CPUs, r.Host.GoVer, r.LoadBefore, r.LoadAfter)
	p("  enroll       %d in %.2fs (%.0f/s, store API)", r.Machines, r.EnrollSeconds, r.EnrollPerS)
	c := r.Connect
	p("  connect      %d connected, %d failed in %.2fs: %.0f machines/s; per machine p50 %.1fms p99 %.1fms max %.1fms",
		c.Connected, c.Failed, c.Seconds, c.PerS, c.P50Ms, c.P99Ms, c.MaxMs)
	in := r.Ingest
	p("  ingested     %d hellos, %d first heartbeats (all by %.1fs after enrolling)", in.Hellos, in.Beaten, in.SettleSeconds)
	p("  read back    %d machine records with a Hello, %d with a heartbeat (store, at the end)", in.StoreHellos, in.StoreBeaten)
	p("  heartbeats   %.0f/s ingested over %.0fs (expected %.0f/s); send→write lag p50 %.0fms p99 %.0fms",
		in.PerS, in.WindowSeconds, in.ExpectedPerS, in.LagP50Ms, in.LagP99Ms)
	pg := r.Ping
	p("  ping         %d/%d answered; p50 %.2fms p99 %.2fms max %.2fms", pg.Answered, pg.Sent, pg.P50Ms, pg.P99Ms, pg.MaxMs)
	p("  exec stub    %d/%d", r.Exec.OK, r.Exec.Sent)
	m := r.Memory
	if m.PlatformRSSTotalMiB > 0 {
		p("  memory       platform process per machine: heap %.1f KiB, stack %.1f KiB, RSS %.1f KiB, %.2f goroutines (RSS %.0f MiB total)",
			m.PlatformHeapKiB, m.PlatformStackKiB, m.PlatformRSSKiB, m.PlatformGoroutines, m.PlatformRSSTotalMiB)
		p("               nats-server per connection: %.1f KiB (heap %.1f KiB + stacks)", m.NATSServerTotalKiB, m.NATSServerHeapKiB)
	}
	if m.NATSVarzMemPerConnKiB > 0 {
		p("               nats-server (varz mem) per connection: %.1f KiB", m.NATSVarzMemPerConnKiB)
	}
	p("               simulated machine (sims process): heap %.1f KiB, RSS %.1f KiB, %.2f goroutines", m.SimsHeapKiB, m.SimsRSSKiB, m.SimsGoroutines)
	if n := r.NATS; n != nil {
		p("  nats-server  %d connections, %d subscriptions, %d slow consumers, %d msgs in, %d out, mem %.0f MiB",
			n.Connections, n.Subscriptions, n.SlowConsumers, n.InMsgs, n.OutMsgs, n.MemMiB)
	}
	s := r.SimStat
	p("  machines did %d heartbeats (%d ingested), %d pings, %d execs; %d dials retried, %d disconnects, %d reconnects, %d requests dropped",
		s.HeartbeatsSent, r.Ingest.TotalHeartbeats, s.PingsServed, s.ExecsServed, s.DialRetries, s.Disconnects, s.Reconnects, s.RPCDropped)
	if r.CPUProfile != "" {
		p("  cpu profile  %s (go tool pprof -top %s)", r.CPUProfile, r.CPUProfile)
	}
	for _, pr := range r.Problems {
		p("  PROBLEM      %s", pr)
	}
	p("  %s", passWord(r.Pass))
	_, err := io.WriteString(w, b.String())
	return err
}
