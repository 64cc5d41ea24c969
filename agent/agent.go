// Package agent is the machine agent's runtime: it holds the NATS
// connection, announces the machine (Hello), serves ControlRequests through
// one Dispatcher, sends heartbeats, and on a clean stop says GoingOffline and
// drains. The capabilities themselves live in agent/exec, agent/fs, ...
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/quartz"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/opengeni/opengeni-agent/agent/desktop"
	"github.com/opengeni/opengeni-agent/agent/metrics"
	"github.com/opengeni/opengeni-agent/agent/opstream"
	"github.com/opengeni/opengeni-agent/agent/pty"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/cgroup"
	"github.com/opengeni/opengeni-agent/internal/logthrottle"
	"github.com/opengeni/opengeni-agent/internal/natsurl"
	"github.com/opengeni/opengeni-agent/internal/subject"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Version is the agent version reported in Hello; set with -ldflags -X.
var Version = "0.1.3-dev"

// Consent is what the machine's owner allowed. It is read live (before every
// gated op and every Hello) so revoking takes effect without a restart.
type Consent struct {
	WholeMachine  bool
	ScreenControl bool
}

// Options configure an Agent. Zero values get the defaults noted.
type Options struct {
	Servers     []string // NATS URLs; required
	Token       string   // NATS auth token (the enrollment bearer), optional
	CredsFile   string   // NATS .creds file, optional
	WorkspaceID string   // required
	AgentID     string   // required

	WorkspaceRoot string // default: the process working directory
	MachineName   string // default: the OS hostname
	UpdateChannel string // default "stable"
	ResumeToken   string
	HeldEpoch     uint32 // the epoch the control plane assigned; 0 fences nothing

	Consent func() Consent // default: whole machine, no screen control
	// Pause is the owner's pause switch, read live on every op (nil: never
	// paused). While paused every op but ping and metrics is refused.
	Pause func() PauseState
	// Observer sees every answered op, refusals included, and pause
	// changes (the owner's audit log, agent/audit). Nil: none.
	Observer Observer

	// RelayURL and RelayToken come from the enrollment credentials: the
	// stream relay's dial base (wss://host/stream) and the agent's ogr_
	// token. Without a RelayURL the PTY ops are not served.
	RelayURL   string
	RelayToken string

	// Display is the X11 display the desktop ops use ("" means $DISPLAY).
	Display string
	// VirtualDesktop lets desktop_ensure start an Xvfb when the machine has
	// no display (headless servers).
	VirtualDesktop bool

	HeartbeatInterval  time.Duration // default 5s
	MaxConcurrentOps   int           // heavy ops served at once; default 32
	MaxQueuedOps       int           // heavy ops that may wait for a slot before new ones are refused busy; default 4 × MaxConcurrentOps
	PtyIdleTimeout     time.Duration // a terminal with no input this long is closed; default 30m, negative disables
	MaxPtys            int           // live terminals at once; default 32
	DrainTimeout       time.Duration // how long in-flight ops may finish on stop; default 20s
	ExecDefaultTimeout time.Duration // exec timeout when a request says 0; default 10m
	ExecMaxTimeout     time.Duration // upper bound of any exec; default 1h
	// NoOpStream leaves op-stream (agent.md §9) unserved: Hello says
	// op_stream=false and the control side uses the v1 ops (an older agent).
	NoOpStream bool

	// Clock times the heartbeats; nil is the real clock (tests pass a
	// quartz.Mock and advance it).
	Clock quartz.Clock

	// APIURL is the control plane the credentials came from; it goes into
	// the exact re-pairing command logged when NATS refuses the bearer.
	APIURL string
	// OnState, when set, is told every change of the connection's live
	// state (connecting, connected, retrying with the last error, denied);
	// `opengeni-agent status` shows it. It must not block.
	OnState func(ConnState)
	// SelfUpdate serves the control plane's fleet update
	// (agent_update_apply) and supplies Hello's completed_update_*. One per
	// process, shared by its connections. Nil: the op answers UNSUPPORTED.
	SelfUpdate *SelfUpdate
	// ResourceLimits runs exec and git in per-op cgroup v2 leaves
	// (ControlRequest.resource_policy, clamped by the owner's caps); Hello's
	// operation_resource_policy / operation_cpu_quota say what it can
	// enforce. Nil: detected on this host, caps from OPENGENI_AGENT_OP_*.
	ResourceLimits *cgroup.Manager

	Logger      *slog.Logger
	NATSOptions []nats.Option // appended last (tests, TLS)
}

// Connection states reported through Options.OnState.
const (
	StateConnecting = "connecting"
	StateConnected  = "connected"
	StateRetrying   = "retrying"
	StateDenied     = "denied"
	StateStopped    = "stopped"
)

// ConnState is the live state of one connection.
type ConnState struct {
	State     string    `json:"state"`
	Server    string    `json:"server,omitempty"`    // redacted URL: connected to, or tried last
	Since     time.Time `json:"since"`               // when this state began
	LastError string    `json:"lastError,omitempty"` // retrying/denied: why
	NextRetry time.Time `json:"nextRetry,omitempty"` // retrying/denied: about when the next attempt is
	Instance  string    `json:"instance,omitempty"`
}

// StopReason is a context cancellation cause that tells the agent what to
// announce in GoingOffline (for example UPDATE before a self-update).
type StopReason struct {
	Reason  agentpb.GoingOfflineReason
	Message string
}

func (s StopReason) Error() string { return "agent stopping: " + s.Message }

// Agent serves one connection (one workspace enrollment).
type Agent struct {
	opts     Options
	logger   *slog.Logger
	root     workspace.Root
	started  time.Time
	sampler  *metrics.Sampler
	dispatch *Dispatcher
	ptys     *pty.Service // nil without a relay
	desktop  *desktop.Desktop
	ops      *opstream.Service

	// bulk is the connection op frames are published on (agent.md §9): a
	// second connection of the same instance, so a transfer's frames never
	// queue ahead of rpc replies, hellos and heartbeats on one socket.
	bulk atomic.Pointer[nats.Conn]

	// redial paces re-dials after the NATS connection closed for good; it
	// is reset by every successful connect, so a machine that was online
	// for a day does not wait the capped delay after its next outage.
	redial backoff.Backoff

	// instance is this process's connection instance (control.md §9): the
	// CONNECT name says it, and next-revision traffic rides
	// agent.<ws>.<id>.connection.<instance>.… beside the v1 subjects, so a
	// cloned credential running elsewhere cannot take this machine's work.
	instance string
	exeSHA   func() string

	// connLogs throttles the per-attempt connection failure lines.
	connLogs logthrottle.Throttle
	// nextDelay is the reconnect delay last chosen (for "retrying in …").
	nextDelay atomic.Int64
	stateMu   sync.Mutex
	state     ConnState
	// pauseSeen is the pause switch as last read; pauseChanged wakes the
	// watcher when a reader saw it change.
	pauseMu      sync.Mutex
	pauseSeen    PauseState
	pauseChanged chan struct{}

	mu      sync.Mutex
	nc      *nats.Conn
	hbSeq   atomic.Uint64
	hbKick  chan struct{}
	stopped atomic.Bool
}

// New builds an agent and registers every capability this build serves.
func New(opts Options) (*Agent, error) {
	if len(opts.Servers) == 0 {
		return nil, errors.New("agent: no NATS servers")
	}
	if opts.WorkspaceID == "" || opts.AgentID == "" {
		return nil, errors.New("agent: workspace id and agent id are required")
	}
	for _, s := range []string{opts.WorkspaceID, opts.AgentID} {
		if strings.ContainsAny(s, ".*> \t\r\n") {
			return nil, fmt.Errorf("agent: id %q is not a valid NATS subject token", s)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.UpdateChannel == "" {
		opts.UpdateChannel = "stable"
	}
	if opts.MachineName == "" {
		opts.MachineName, _ = os.Hostname()
	}
	if opts.Consent == nil {
		opts.Consent = func() Consent { return Consent{WholeMachine: true} }
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = 5 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = quartz.NewReal()
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 20 * time.Second
	}
	logger := opts.Logger.With("component", "agent", "agent_id", opts.AgentID)
	if opts.ResourceLimits == nil {
		caps, err := cgroup.CapsFromEnv(os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("agent: per-op resource caps: %w", err)
		}
		opts.ResourceLimits = cgroup.Detect(logger, caps)
		if sup := opts.ResourceLimits.Support(); sup.Reason != "" {
			level := slog.LevelDebug
			if !caps.IsZero() { // the owner asked for caps this host cannot apply
				level = slog.LevelWarn
			}
			logger.Log(context.Background(), level, "per-op resource limits unavailable", "reason", sup.Reason, "caps", caps.String())
		}
	}
	root := workspace.New(opts.WorkspaceRoot)
	a := &Agent{
		opts:     opts,
		logger:   logger,
		root:     root,
		started:  time.Now(),
		sampler:  metrics.New(root.Dir, logger),
		dispatch: NewDispatcher(logger, opts.MaxConcurrentOps),
		hbKick:   make(chan struct{}, 1),

		pauseChanged: make(chan struct{}, 1),
		redial:       backoff.Backoff{Policy: backoff.Standard()},
		instance:     uuid.NewString(),
		exeSHA:       sync.OnceValue(executableSHA256),
	}
	a.dispatch.SetHeldEpoch(opts.HeldEpoch)
	a.dispatch.SetQueueLimit(opts.MaxQueuedOps)
	a.dispatch.SetResourceLimits(opts.ResourceLimits)
	if opts.SelfUpdate != nil {
		opts.SelfUpdate.attach(a.dispatch) // its idle check waits for this connection's ops too
	}
	if opts.Observer != nil {
		a.dispatch.SetObserver(opts.Observer)
	}
	if opts.Pause != nil {
		a.dispatch.SetPause(a.pauseState)
	}
	a.register()
	return a, nil
}

// Dispatcher exposes the op registry (tests, extra capabilities). Register
// extra ops before Run: Run seals the registry, and a registration after
// that panics with ErrSealed.
func (a *Agent) Dispatcher() *Dispatcher { return a.dispatch }

// Subject returns the agent's v1 subject with the given suffix ("rpc", "hello", "events").
func (a *Agent) Subject(suffix string) string {
	return subject.Of(a.opts.WorkspaceID, a.opts.AgentID, suffix)
}

// ConnectionSubject returns the subject of this process's connection
// instance with the given suffix (agent.<ws>.<id>.connection.<inst>.<suffix>).
func (a *Agent) ConnectionSubject(suffix string) string {
	return subject.Connection(a.opts.WorkspaceID, a.opts.AgentID, a.instance) + "." + suffix
}

// Instance is this process's connection instance id.
func (a *Agent) Instance() string { return a.instance }

// publishBoth publishes on the v1 subject (for v1 control planes) and on the
// connection instance's (for next-revision ones).
func (a *Agent) publishBoth(nc *nats.Conn, suffix string, b []byte) error {
	if err := nc.Publish(a.Subject(suffix), b); err != nil {
		return err
	}
	return nc.Publish(a.ConnectionSubject(suffix), b)
}

func (a *Agent) ping(_ context.Context, req *agentpb.PingRequest) (*agentpb.PingResponse, error) {
	return &agentpb.PingResponse{Nonce: req.GetNonce(), AgentMonotonicMs: uint64(time.Since(a.started).Milliseconds())}, nil
}

// Run serves until ctx ends, then announces GoingOffline (the reason is
// context.Cause(ctx) when it is a StopReason, else USER_STOP), drains
// in-flight ops and closes the connection. NATS outages are ridden out
// forever with backoff. It returns nil after a clean stop.
func (a *Agent) Run(ctx context.Context) error {
	a.dispatch.seal()
	opsCtx, cancelOps := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOps()
	if su := a.opts.SelfUpdate; su != nil {
		defer su.detach(a.dispatch)
	}
	pauseCtx, stopPause := context.WithCancel(ctx)
	pauseDone := make(chan struct{})
	go func() { defer close(pauseDone); a.watchPause(pauseCtx) }()
	defer func() { stopPause(); <-pauseDone }()
	if a.ops != nil {
		bulk, err := nats.Connect(strings.Join(a.opts.Servers, ","), a.bulkOptions()...)
		if err != nil {
			return fmt.Errorf("agent: bulk connection: %w", err)
		}
		a.bulk.Store(bulk)
		defer bulk.Close()
	}

	for {
		closedUnexpectedly := make(chan struct{})
		nc, err := a.connect(opsCtx, closedUnexpectedly)
		if err != nil {
			// Only bad options fail here (the dial itself retries in the background).
			return fmt.Errorf("agent: connect: %w", err)
		}
		hbCtx, stopHB := context.WithCancel(ctx)
		var hbDone sync.WaitGroup
		hbDone.Add(1)
		go func() { defer hbDone.Done(); a.heartbeats(hbCtx) }()

		select {
		case <-ctx.Done():
			stopHB()
			hbDone.Wait()
			a.shutdown(nc, context.Cause(ctx), cancelOps)
			return nil
		case <-closedUnexpectedly:
			stopHB()
			hbDone.Wait()
			a.logger.Error("NATS connection closed; dialing again")
			if err := a.redial.Sleep(ctx); err != nil {
				a.shutdown(nil, context.Cause(ctx), cancelOps)
				return nil
			}
		}
	}
}

func (a *Agent) connect(opsCtx context.Context, closedUnexpectedly chan struct{}) (*nats.Conn, error) {
	policy := backoff.Standard()
	// Hello must not go out before the rpc subscription exists, or the
	// control plane could send a request nobody answers.
	subscribed := make(chan struct{})
	announce := func(nc *nats.Conn, what string) {
		<-subscribed
		a.onConnect(nc, what)
	}
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(), // a laptop keeps trying; the bearer may be re-issued
		nats.ReconnectBufSize(256 << 10),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			d := backoff.Jitter(policy.Ceiling(attempts))
			a.nextDelay.Store(int64(d))
			return d
		}),
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) { a.connectFailed(nc, err) }),
		nats.ConnectHandler(func(nc *nats.Conn) { announce(nc, "connected") }),
		nats.ReconnectHandler(func(nc *nats.Conn) { announce(nc, "reconnected") }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if !a.stopped.Load() {
				a.logger.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthExpired) {
				// The short-lived user JWT of a connection instance expired:
				// that is a credential rotation, not an outage. Reconnect at
				// once (the callout issues a fresh JWT), no backoff.
				a.logger.Info("NATS user JWT expired; reconnecting at once for a fresh one")
				_ = nc.ForceReconnect()
				return
			}
			if isAuthDenial(err) {
				a.connectFailed(nc, err)
				return
			}
			a.logger.Warn("NATS error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			if !a.stopped.Load() {
				close(closedUnexpectedly)
			}
		}),
	}
	opts = append(opts, a.identityOptions()...)

	servers := natsurl.Redact(strings.Join(a.opts.Servers, ","))
	a.logger.Info("connecting to NATS", "servers", servers, "workspace", a.opts.WorkspaceID, "instance", a.instance)
	a.setState(ConnState{State: StateConnecting, Server: servers})
	nc, err := nats.Connect(strings.Join(a.opts.Servers, ","), opts...)
	if err != nil {
		return nil, err
	}
	// v1 control planes address the machine, next-revision ones this
	// connection instance; both are served.
	for _, subj := range []string{a.Subject(subject.RPC), a.ConnectionSubject(subject.RPC)} {
		sub, err := nc.Subscribe(subj, func(msg *nats.Msg) { a.onRequest(opsCtx, nc, msg) })
		if err != nil {
			close(subscribed)
			nc.Close()
			return nil, err
		}
		// A burst of requests waits in the subscription, not in NATS' slow-consumer drop.
		_ = sub.SetPendingLimits(64<<10, 512<<20)
	}
	if a.ops != nil {
		// Op acks (credit) come on the control connection: they are small
		// and must not wait behind bulk frames.
		if _, err := nc.Subscribe(a.ConnectionSubject(subject.Ack), func(msg *nats.Msg) { a.ops.Ack(msg.Data) }); err != nil {
			close(subscribed)
			nc.Close()
			return nil, err
		}
	}
	a.mu.Lock()
	a.nc = nc
	a.mu.Unlock()
	close(subscribed)
	return nc, nil
}

// identityOptions say who this connection is: the instance's CONNECT name
// (the auth callout grants by it), its private inbox, its credentials, and
// the caller's extra options. The control and the bulk connection share them.
func (a *Agent) identityOptions() []nats.Option {
	opts := []nats.Option{
		nats.Name(subject.ConnectionNamePrefix + a.instance),
		// The only inbox an agent may read is its own (docs/security.md).
		nats.CustomInboxPrefix(subject.AgentInboxPrefix(a.opts.WorkspaceID, a.opts.AgentID)),
	}
	if a.opts.Token != "" {
		opts = append(opts, nats.Token(a.opts.Token))
	}
	if a.opts.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.opts.CredsFile))
	}
	return append(opts, a.opts.NATSOptions...)
}

// bulkOptions are the bulk connection's: it only publishes op frames, so
// it reconnects forever, quietly, with a reconnect buffer of a few frames
// (frames refused meanwhile stay retained for the consumer's reattach).
func (a *Agent) bulkOptions() []nats.Option {
	policy := backoff.Standard()
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.IgnoreAuthErrorAbort(),
		nats.ReconnectBufSize(4 << 20),
		nats.CustomReconnectDelay(func(attempts int) time.Duration { return backoff.Jitter(policy.Ceiling(attempts)) }),
		nats.ErrorHandler(func(nc *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthExpired) {
				_ = nc.ForceReconnect()
			}
		}),
	}
	return append(opts, a.identityOptions()...)
}

// publishFrame publishes one op frame on the bulk connection.
func (a *Agent) publishFrame(subj string, b []byte) error {
	nc := a.bulk.Load()
	if nc == nil {
		return nats.ErrConnectionClosed
	}
	return nc.Publish(subj, b)
}

// onConnect announces the machine on every (re)connect and restarts the
// heartbeat sequence for the new connection.
func (a *Agent) onConnect(nc *nats.Conn, what string) {
	a.redial.Reset()
	a.hbSeq.Store(0)
	if err := a.publishHello(nc); err != nil {
		a.logger.Warn("hello failed", "err", err)
	} else if su := a.opts.SelfUpdate; su != nil {
		su.confirm() // an updated binary that came online passed its boot probation
	}
	a.logger.Info("agent "+what, "server", nc.ConnectedUrlRedacted(), "subject", a.Subject("rpc"), "instance", a.instance,
		"max_payload", nc.MaxPayload())
	a.setState(ConnState{State: StateConnected, Server: nc.ConnectedUrlRedacted()})
	select {
	case a.hbKick <- struct{}{}:
	default:
	}
}

func (a *Agent) onRequest(opsCtx context.Context, nc *nats.Conn, msg *nats.Msg) {
	if msg.Reply == "" {
		a.logger.Warn("control request without a reply subject; dropped")
		return
	}
	maxPayload := int(nc.MaxPayload())
	// Accept on the delivery goroutine keeps arrival order for ordered ops.
	req := a.dispatch.Accept(msg.Data)
	msg.Data = nil // decoded (and copied); the raw bytes need not wait for a slot too
	serve := func() {
		out := a.dispatch.Serve(opsCtx, req, maxPayload)
		if err := msg.Respond(out); err != nil {
			a.logger.Warn("reply publish failed", "err", err)
		}
	}
	if req.Inline() {
		serve()
		return
	}
	go serve()
}

// Hello builds the announcement of this machine.
func (a *Agent) Hello() *agentpb.Hello {
	consent := a.opts.Consent()
	hasDesktop, display, desktopReason := a.desktop.Capability()
	var h *agentpb.Hello
	if p := a.pauseState(); p.Paused {
		// Capability honesty: while the owner has paused the machine nothing
		// but ping and metrics is served, and the reason says why.
		h = a.hello(consent, false, nil, p.Message())
		c := h.Capabilities
		c.Exec, c.Filesystem, c.Git, c.Pty = false, false, false, false
	} else {
		h = a.hello(consent, hasDesktop, display, desktopReason)
	}
	if su := a.opts.SelfUpdate; su != nil {
		if c := su.Completed(); c != nil {
			h.CompletedUpdateOperationId = c.OperationID
			h.CompletedUpdateTargetVersion = c.TargetVersion
			h.CompletedUpdateBinarySha256 = c.BinarySHA256
		}
	}
	return h
}

func (a *Agent) hello(consent Consent, hasDesktop bool, display *agentpb.Display, desktopReason string) *agentpb.Hello {
	return &agentpb.Hello{
		AgentId:       a.opts.AgentID,
		WorkspaceId:   a.opts.WorkspaceID,
		AgentVersion:  Version,
		Os:            HostOS(),
		Arch:          HostArch(),
		MachineName:   a.opts.MachineName,
		WorkspaceRoot: a.root.Dir,
		Capabilities: &agentpb.Capabilities{
			Exec:                   a.dispatch.Serves("exec"),
			Filesystem:             a.dispatch.Serves("fs_read"),
			Git:                    a.dispatch.Serves("git"),
			Pty:                    a.dispatch.Serves("pty_open"),
			Desktop:                hasDesktop,
			ConsentedWholeMachine:  consent.WholeMachine,
			ConsentedScreenControl: consent.ScreenControl,
			Display:                display,
			// Capability honesty (next revision): why there is no desktop.
			DesktopUnavailableReason: desktopReason,
			OpStream:                 a.dispatch.Serves("op_start"),
			// Resource honesty: true only where a delegated cgroup v2
			// subtree can hold each exec and git in its own leaf.
			OperationResourcePolicy: a.opts.ResourceLimits.Support().Memory,
			OperationCpuQuota:       a.opts.ResourceLimits.Support().CPU,
		},
		UpdateChannel: a.opts.UpdateChannel,
		ResumeToken:   a.opts.ResumeToken,
		BinarySha256:  a.exeSHA(),
	}
}

func (a *Agent) publishHello(nc *nats.Conn) error {
	b, err := proto.Marshal(a.Hello())
	if err != nil {
		return err
	}
	if err := a.publishBoth(nc, subject.Hello, b); err != nil {
		return err
	}
	return nc.FlushTimeout(2 * time.Second)
}

// heartbeats publishes an AgentEvent heartbeat at once after each connect
// and then every interval while connected.
func (a *Agent) heartbeats(ctx context.Context) {
	t := a.opts.Clock.NewTicker(a.opts.HeartbeatInterval, "agent", "heartbeat")
	defer t.Stop()
	var lastRefused uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.hbKick:
		case <-t.C:
		}
		a.mu.Lock()
		nc := a.nc
		a.mu.Unlock()
		if nc == nil || !nc.IsConnected() {
			continue
		}
		ev := &agentpb.AgentEvent{AgentId: a.opts.AgentID, Event: &agentpb.AgentEvent_Heartbeat{Heartbeat: &agentpb.Heartbeat{
			Seq:            a.hbSeq.Add(1),
			UptimeMs:       uint64(time.Since(a.started).Milliseconds()),
			ActiveSessions: uint32(a.dispatch.Active()),
			Metrics:        a.sampler.Sample(ctx),
			Draining:       a.dispatch.Draining(),
			Capacity:       a.capacity(ctx),
			Admission:      a.admission(),
		}}}
		if err := a.publishEvent(nc, ev); err != nil {
			a.logger.Warn("heartbeat failed", "err", err)
		}
		lastRefused = a.logQueue(ctx, lastRefused)
	}
}

// logQueue reports the heavy-op queue with each heartbeat: at Info while
// ops wait or were refused busy since the last report, else at Debug. The
// v1 Heartbeat and MetricsSample have no field for it, so the log is where
// an operator sees a saturated machine. It returns the refused count.
func (a *Agent) logQueue(ctx context.Context, lastRefused uint64) uint64 {
	q := a.dispatch.Queue()
	level := slog.LevelDebug
	if q.Queued > 0 || q.Refused != lastRefused {
		level = slog.LevelInfo
	}
	a.logger.Log(ctx, level, "op queue", "running", q.Running, "slots", q.Slots, "queue_depth", q.Queued,
		"queue_limit", q.Limit, "refused_busy_total", q.Refused, "refused_busy_since_last", q.Refused-lastRefused)
	return q.Refused
}

// capacity is the heartbeat's HostCapacitySample. While the audit log
// cannot write (a full disk), disk_free_bytes is 0 whatever the workspace
// root's disk says, so the platform learns the machine's disk is full.
func (a *Agent) capacity(ctx context.Context) *agentpb.HostCapacitySample {
	c := a.sampler.Capacity(ctx)
	if sr, ok := a.opts.Observer.(StorageReporter); ok {
		if sr.StorageFailure() != "" { // the audit log itself logs the failure
			c.DiskFreeBytes = 0
		}
	}
	return c
}

// admission is the heartbeat's AdmissionTelemetry: heavy ops running and
// queued, light ops (everything else in flight), live ops.
func (a *Agent) admission() *agentpb.AdmissionTelemetry {
	q := a.dispatch.Queue()
	live := a.dispatch.Active()
	t := &agentpb.AdmissionTelemetry{
		HeavyRunning: uint64(q.Running), HeavyQueued: uint64(q.Queued),
		LightRunning: uint64(max(0, live-q.Running-q.Queued)), LiveOps: uint64(live),
	}
	if a.ops != nil {
		ot := a.ops.Telemetry()
		t.LiveOps += ot.Live
		t.OpFramesDroppedTotal, t.EvictedUnackedTotal = ot.Dropped, ot.EvictedUnacked
	}
	return t
}

func (a *Agent) publishEvent(nc *nats.Conn, ev *agentpb.AgentEvent) error {
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	return a.publishBoth(nc, subject.Events, b)
}

// executableSHA256 is the hex SHA-256 of the running binary (Hello
// binary_sha256), "" when it cannot be read.
func executableSHA256() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return fileSHA256(exe)
}

// fileSHA256 is the hex SHA-256 of a file, "" when it cannot be read.
func fileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

// shutdown: refuse new work, say GoingOffline, let in-flight ops finish (up
// to DrainTimeout, then cancel them), drain the subscription, close.
func (a *Agent) shutdown(nc *nats.Conn, cause error, cancelOps context.CancelFunc) {
	a.stopped.Store(true)
	a.dispatch.BeginDrain()
	reason := StopReason{Reason: agentpb.GoingOfflineReason_GOING_OFFLINE_REASON_USER_STOP, Message: "agent stopped"}
	var sr StopReason
	if errors.As(cause, &sr) {
		reason = sr
	}
	if nc != nil && nc.IsConnected() {
		ev := &agentpb.AgentEvent{AgentId: a.opts.AgentID, Event: &agentpb.AgentEvent_GoingOffline{
			GoingOffline: &agentpb.GoingOffline{Reason: reason.Reason, Message: reason.Message}}}
		if err := a.publishEvent(nc, ev); err == nil {
			_ = nc.FlushTimeout(2 * time.Second)
		}
		a.logger.Info("announced going offline", "reason", reason.Reason.String())
	}
	drainCtx, cancel := context.WithTimeout(context.Background(), a.opts.DrainTimeout)
	if err := a.dispatch.Wait(drainCtx); err != nil {
		a.logger.Warn("in-flight ops did not finish in time; cancelling them", "active", a.dispatch.Active())
		cancelOps()
		waitCtx, cancelWait := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.dispatch.Wait(waitCtx)
		cancelWait()
	}
	cancel()
	if a.desktop != nil {
		_ = a.desktop.Close() // stops the pump and any Xvfb we started
	}
	if a.ops != nil {
		a.ops.Close() // op-stream ops die with the agent; a consumer learns AGENT_RESTARTED
	}
	if a.ptys != nil {
		// Terminals die with the agent (hang-up, then kill).
		ptyCtx, cancelPty := context.WithTimeout(context.Background(), 10*time.Second)
		a.ptys.Shutdown(ptyCtx)
		cancelPty()
	}
	if nc != nil {
		closed := make(chan struct{})
		nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := nc.Drain(); err != nil {
			nc.Close()
		} else {
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				nc.Close()
			}
		}
	}
	a.setState(ConnState{State: StateStopped})
	a.logger.Info("agent stopped")
}

// connectFailed reports one failed connection attempt: its cause and when
// the next one comes, at most one line per cause per interval (with the
// count of those suppressed). A refused bearer says which credential and
// the exact command that fixes it.
func (a *Agent) connectFailed(nc *nats.Conn, err error) {
	if a.stopped.Load() || err == nil {
		return
	}
	server := ""
	if nc != nil {
		server = nc.ConnectedUrlRedacted()
	}
	if server == "" {
		server = natsurl.Redact(strings.Join(a.opts.Servers, ","))
	}
	next := time.Duration(a.nextDelay.Load())
	st := ConnState{State: StateRetrying, Server: server, LastError: err.Error(), NextRetry: time.Now().Add(next)}
	if isAuthDenial(err) {
		st.State = StateDenied
	}
	a.setState(st)
	// Per cause: a new cause is logged at once, a repeated one once per interval.
	key := st.State + ": " + err.Error()
	if ok, suppressed := a.connLogs.Allow(key); ok {
		if st.State == StateDenied {
			a.logger.Error("NATS refused this machine's enrollment bearer (connection "+a.opts.WorkspaceID+"/"+a.opts.AgentID+
				"): it was revoked or expired, or, for up to 20 s after an unclean exit, the previous run still holds the "+
				"connection lease. The agent keeps retrying; if this persists, pair this machine again: "+
				a.repairCommand(), "server", server, "err", err, "suppressed", suppressed)
			return
		}
		a.logger.Warn("cannot connect to NATS; retrying", "server", server, "err", err,
			"next_retry_in", next.Round(time.Millisecond), "suppressed", suppressed)
	}
}

// repairCommand is the exact command that pairs this machine again.
func (a *Agent) repairCommand() string {
	cmd := "opengeni-agent connect --force"
	if a.opts.APIURL != "" {
		cmd += " --api-url " + a.opts.APIURL
	}
	return cmd + " --workspace-id " + a.opts.WorkspaceID
}

// setState records the live state (keeping Since while the state is
// unchanged) and tells Options.OnState.
func (a *Agent) setState(st ConnState) {
	a.stateMu.Lock()
	if st.State == a.state.State && !a.state.Since.IsZero() {
		st.Since = a.state.Since
	} else {
		st.Since = time.Now()
	}
	st.Instance = a.instance
	a.state = st
	a.stateMu.Unlock()
	if a.opts.OnState != nil {
		a.opts.OnState(st)
	}
}

// State is the connection's live state.
func (a *Agent) State() ConnState {
	a.stateMu.Lock()
	defer a.stateMu.Unlock()
	return a.state
}

// isAuthDenial classifies connect errors that mean "the bearer was refused".
func isAuthDenial(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		return true
	}
	s := strings.ToLower(err.Error())
	return strings.Contains(s, "authorization") || strings.Contains(s, "authentication") || strings.Contains(s, "auth violation")
}

// HostOS is the wire Os of this build.
func HostOS() agentpb.Os {
	switch runtime.GOOS {
	case "linux":
		return agentpb.Os_OS_LINUX
	case "darwin":
		return agentpb.Os_OS_MACOS
	case "windows":
		return agentpb.Os_OS_WINDOWS
	}
	return agentpb.Os_OS_UNSPECIFIED
}

// HostArch is the wire Arch of this build.
func HostArch() agentpb.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return agentpb.Arch_ARCH_X86_64
	case "arm64":
		return agentpb.Arch_ARCH_AARCH64
	}
	return agentpb.Arch_ARCH_UNSPECIFIED
}
