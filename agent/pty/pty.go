// Package pty serves the interactive terminal ops pty_open, pty_write,
// pty_resize and pty_close (agent.md §5.7). Each terminal is a real
// pseudo-terminal (creack/pty on unix, ConPTY on Windows) whose bytes flow
// through one relay channel (agent/stream); the channel id is the pty id.
//
// Beyond the reference: the default command is a login shell; a relay
// reconnect, a relay restart or a departing viewer never ends the terminal
// (the channel re-registers and resends its recent output); pty_write goes
// straight to the terminal; pty_resize is applied before the reply; and the
// exit code is kept after the process exits, for pty_close.
package pty

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/envmerge"
	"github.com/opengeni/opengeni-agent/internal/workspace"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Defaults applied by New.
const (
	DefaultCols = 80
	DefaultRows = 24
	DefaultTerm = "xterm-256color"
	// ReadyTimeout bounds pty_open: channel registration plus the first
	// output frame reaching the relay (PUMP_READY_TIMEOUT).
	DefaultReadyTimeout = 5 * time.Second
	// NudgeAfter: a command silent this long gets one "\n" (which the
	// terminal echoes), so a quiet program still becomes ready.
	DefaultNudgeAfter = time.Second
	// HangupGrace is how long pty_close waits after SIGHUP before SIGKILL,
	// and then again for the kill to land.
	DefaultHangupGrace = 2 * time.Second
	// ExitRetention keeps an exited terminal's exit code for pty_close.
	DefaultExitRetention = 10 * time.Minute
	// IdleTimeout closes a terminal nobody typed into for this long: a
	// forgotten pty_close must not keep a shell alive until the agent exits.
	DefaultIdleTimeout = 30 * time.Minute
	// MaxLive caps the terminals whose process is running.
	DefaultMaxLive = 32
	// ChunkSize is the largest PTY read, i.e. the largest output frame.
	ChunkSize = 32 << 10
	// MaxDim is the largest cols/rows value.
	MaxDim = 65535
)

// Options configures a Service. Zero values get defaults in New.
type Options struct {
	// Streams registers relay channels; nil (or unconfigured) makes every op
	// UNSUPPORTED, as an agent enrolled without a relay cannot stream.
	Streams *stream.Dialer
	// Root resolves the request cwd.
	Root workspace.Root
	// Env is the base environment of every terminal; nil means os.Environ.
	Env func() []string
	// Logger receives lifecycle events (never terminal bytes).
	Logger *slog.Logger

	ReadyTimeout  time.Duration
	NudgeAfter    time.Duration // negative disables the nudge
	HangupGrace   time.Duration
	ExitRetention time.Duration

	// IdleTimeout: a terminal that gets no input for this long (no viewer
	// keystroke, pty_write or pty_resize) is hung up and its process group
	// killed. The relay does not tell the agent whether a viewer is
	// attached, so input is the sign of one. Negative disables.
	IdleTimeout time.Duration
	// MaxLive caps the terminals whose process is running; pty_open beyond
	// it is refused with an OS error (reason pty_limit).
	MaxLive int
	// Now is the idle clock; nil means time.Now.
	Now func() time.Time
}

// Service owns the open terminals. It is safe for concurrent use.
type Service struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
	pumps    map[*session]struct{} // sessions whose pump has not finished, listed or not
	closed   bool
	live     int           // terminals reserved or running (counted against MaxLive)
	reaping  bool          // the idle reaper runs
	stopReap chan struct{} // closed by Shutdown
	reapDone chan struct{} // closed when the reaper returned

	// scopes maps a pty_open scope_id to its terminal (next revision: the
	// same non-empty scope reattaches instead of starting a new shell);
	// scopeLocks serialises opens of one scope so two racing opens start
	// one shell.
	scopes     map[string]*session
	scopeLocks map[string]*scopeLock
}

// scopeLock serialises the opens of one scope; refs counts its holders and
// waiters, so the entry goes away with the last one.
type scopeLock struct {
	mu   sync.Mutex
	refs int
}

// New returns a Service with defaults applied to opts.
func New(opts Options) *Service {
	if opts.Env == nil {
		opts.Env = os.Environ
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.NudgeAfter == 0 {
		opts.NudgeAfter = DefaultNudgeAfter
	}
	if opts.HangupGrace <= 0 {
		opts.HangupGrace = DefaultHangupGrace
	}
	if opts.ExitRetention <= 0 {
		opts.ExitRetention = DefaultExitRetention
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}
	if opts.MaxLive <= 0 {
		opts.MaxLive = DefaultMaxLive
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{opts: opts, log: opts.Logger.With("component", "pty"), sessions: map[string]*session{},
		pumps: map[*session]struct{}{}, stopReap: make(chan struct{}), reapDone: make(chan struct{}),
		scopes: map[string]*session{}, scopeLocks: map[string]*scopeLock{}}
}

// lockScope serialises the opens of one scope.
func (s *Service) lockScope(scope string) (unlock func()) {
	s.mu.Lock()
	l := s.scopeLocks[scope]
	if l == nil {
		l = &scopeLock{}
		s.scopeLocks[scope] = l
	}
	l.refs++
	s.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		s.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(s.scopeLocks, scope)
		}
		s.mu.Unlock()
	}
}

// liveScope is the scope's terminal if it is still listed and its program
// runs (not exited, not being reaped for idleness); else it forgets it.
func (s *Service) liveScope(scope string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.scopes[scope]
	if sess == nil {
		return nil
	}
	if s.sessions[sess.id] != sess || sess.hasExited() || sess.expiring.Load() {
		delete(s.scopes, scope)
		return nil
	}
	return sess
}

// reserve counts a terminal against MaxLive; the returned release gives
// the place back (once, however often it is called).
func (s *Service) reserve() (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_DRAINING, "pty service is shutting down")
	}
	if s.live >= s.opts.MaxLive {
		e := agenterr.New(agentpb.ErrorCode_ERROR_CODE_OS,
			"os error: too many terminals: %d are running (limit %d); close one with pty_close", s.live, s.opts.MaxLive)
		e.Detail = map[string]string{"reason": "pty_limit", "live": strconv.Itoa(s.live), "limit": strconv.Itoa(s.opts.MaxLive)}
		return nil, e
	}
	s.live++
	return sync.OnceFunc(func() {
		s.mu.Lock()
		s.live--
		s.mu.Unlock()
	}), nil
}

// Live is the number of terminals counted against MaxLive.
func (s *Service) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live
}

// startReaper runs the idle reaper once the first terminal exists (s.mu held).
func (s *Service) startReaper() {
	if s.reaping || s.opts.IdleTimeout < 0 {
		return
	}
	s.reaping = true
	every := min(max(s.opts.IdleTimeout/4, 10*time.Millisecond), time.Minute)
	go func() {
		defer close(s.reapDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stopReap:
				return
			case <-t.C:
				s.reapIdle(context.Background())
			}
		}
	}()
}

// reapIdle closes every running terminal idle for IdleTimeout: hang-up,
// SIGKILL to its process group after HangupGrace. The session stays
// listed (exited) so pty_close still answers with its exit code.
func (s *Service) reapIdle(ctx context.Context) int {
	if s.opts.IdleTimeout < 0 {
		return 0
	}
	now := s.opts.Now()
	var idle []*session
	s.mu.Lock()
	for _, ss := range s.sessions {
		if !ss.hasExited() && now.Sub(ss.lastInput()) >= s.opts.IdleTimeout && ss.expiring.CompareAndSwap(false, true) {
			idle = append(idle, ss)
		}
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range idle {
		s.log.Info("pty idle; closing it", "pty_id", ss.id, "idle_for", now.Sub(ss.lastInput()).Round(time.Second), "idle_timeout", s.opts.IdleTimeout)
		wg.Add(1)
		go func() { defer wg.Done(); ss.expire(ctx) }()
	}
	wg.Wait()
	return len(idle)
}

// process is a child on a pseudo-terminal.
type process interface {
	io.Reader // terminal output
	io.Writer // terminal input
	Resize(cols, rows uint16) error
	// Wait blocks until the child exits and returns its exit code
	// (128+signal when a signal ended it).
	Wait() (int, error)
	Hangup() error
	Kill() error
	// Close releases the terminal; a pending Read returns.
	Close() error
}

// spawnError is a failure to start the command.
type spawnError struct {
	argv0 string
	err   error
}

func (e *spawnError) Error() string { return "pty spawn " + e.argv0 + ": " + e.err.Error() }
func (e *spawnError) Unwrap() error { return e.err }

func (s *Service) configured(op string) error {
	if !s.opts.Streams.Configured() {
		return agenterr.Unsupported("%s: no relay stream registrar is wired", op)
	}
	return nil
}

// Open serves pty_open: spawn the command on a new terminal, register its
// relay channel and answer once the pump is live.
func (s *Service) Open(ctx context.Context, req *agentpb.PtyOpenRequest) (*agentpb.PtyOpenResponse, error) {
	if err := s.configured("pty_open"); err != nil {
		return nil, err
	}
	env := s.environ(req)
	argv := req.GetCommand()
	if len(argv) == 0 {
		argv = defaultShell(env)
	}
	if argv[0] == "" {
		return nil, agenterr.Invalid("pty_open: empty command")
	}
	dir := s.cwd(req.GetCwd())
	cols, rows := dim(req.GetCols(), DefaultCols), dim(req.GetRows(), DefaultRows)

	scope := req.GetScopeId()
	if scope != "" {
		unlock := s.lockScope(scope)
		defer unlock()
		if sess := s.liveScope(scope); sess != nil {
			// Reattach: the same terminal and channel, sized as asked.
			sess.touch()
			if req.GetCols() > 0 && req.GetRows() > 0 {
				_ = sess.proc.Resize(clamp(req.GetCols()), clamp(req.GetRows()))
			}
			s.log.Info("pty reattached", "pty_id", sess.id, "scope_id", scope)
			return &agentpb.PtyOpenResponse{PtyId: sess.id, Channel: sess.ch.Descriptor()}, nil
		}
	}

	release, err := s.reserve()
	if err != nil {
		return nil, err
	}
	proc, err := startProcess(argv, dir, env, cols, rows)
	if err != nil {
		release()
		var se *spawnError
		if errors.As(err, &se) {
			return nil, agenterr.FromIO("pty spawn "+se.argv0, se.err)
		}
		return nil, agenterr.FromIO("openpty", errors.Unwrap(err))
	}

	readyCtx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	ch, err := s.opts.Streams.Open(readyCtx, agentpb.StreamKind_STREAM_KIND_PTY, stream.PortPTY)
	if err != nil {
		proc.Kill()
		proc.Close()
		go func() { proc.Wait(); release() }()
		if readyCtx.Err() != nil && ctx.Err() == nil {
			return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_TIMEOUT,
				"timed out: pty stream could not register with the relay within %v: %v", s.opts.ReadyTimeout, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, streamError(err)
	}
	sess := newSession(s, ch, proc, argv[0], release)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		sess.shutdown()
		go func() { proc.Wait(); release() }()
		return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_DRAINING, "pty service is shutting down")
	}
	s.sessions[sess.id] = sess
	if scope != "" {
		s.scopes[scope] = sess
	}
	s.pumps[sess] = struct{}{}
	s.startReaper()
	s.mu.Unlock()
	sess.start()
	s.log.Info("pty opened", "pty_id", sess.id, "argv0", argv[0], "cols", cols, "rows", rows)

	select {
	case <-sess.ready:
		return &agentpb.PtyOpenResponse{PtyId: sess.id, Channel: ch.Descriptor()}, nil
	case <-sess.pumpDead:
		s.remove(sess)
		sess.shutdown()
		return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_OS, "os error: pty stream pump ended before it became ready")
	case <-sess.readyFailed:
		// The first output could not reach the relay (say, it refused the
		// channel's re-registration): that is the answer, not a timeout.
		s.remove(sess)
		sess.shutdown()
		return nil, streamError(sess.readyErr)
	case <-readyCtx.Done():
		s.remove(sess)
		sess.shutdown()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e := agenterr.New(agentpb.ErrorCode_ERROR_CODE_TIMEOUT,
			"timed out: pty stream pump did not become ready within %v", s.opts.ReadyTimeout)
		if last := ch.LastError(); last != nil { // why the relay did not take the output
			e.Message += ": " + last.Error()
			e.Err = last
		}
		return nil, e
	}
}

// streamError is a relay channel failure: STREAM, not retryable (the relay
// refused the channel or broke the protocol; the same open fails again).
func streamError(err error) error {
	return &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_STREAM, Message: "pty stream: " + err.Error(), Err: err}
}

// Write serves pty_write: the bytes go straight to the terminal's input.
func (s *Service) Write(ctx context.Context, req *agentpb.PtyWriteRequest) (*agentpb.PtyWriteResponse, error) {
	if err := s.configured("pty_write"); err != nil {
		return nil, err
	}
	sess, err := s.lookup(req.GetPtyId())
	if err != nil {
		return nil, err
	}
	sess.touch()
	n, err := sess.write(ctx, req.GetData())
	if err != nil {
		return nil, agenterr.FromIO("write pty "+sess.id, err)
	}
	return &agentpb.PtyWriteResponse{BytesWritten: uint64(n)}, nil
}

// Resize serves pty_resize; cols and rows are clamped to [1, 65535] and the
// new size is applied before the reply.
func (s *Service) Resize(ctx context.Context, req *agentpb.PtyResizeRequest) (*agentpb.PtyResizeResponse, error) {
	if err := s.configured("pty_resize"); err != nil {
		return nil, err
	}
	sess, err := s.lookup(req.GetPtyId())
	if err != nil {
		return nil, err
	}
	sess.touch()
	if err := sess.proc.Resize(clamp(req.GetCols()), clamp(req.GetRows())); err != nil && !sess.hasExited() {
		return nil, agenterr.FromIO("resize pty "+sess.id, err)
	}
	return &agentpb.PtyResizeResponse{}, nil
}

// Close serves pty_close: hang up the terminal (SIGHUP, then SIGKILL after
// HangupGrace), wait for the exit and return the exit code (-1 if the
// process could not be reaped in time). An exited terminal answers with its
// kept exit code.
func (s *Service) Close(ctx context.Context, req *agentpb.PtyCloseRequest) (*agentpb.PtyCloseResponse, error) {
	if err := s.configured("pty_close"); err != nil {
		return nil, err
	}
	sess, err := s.lookup(req.GetPtyId())
	if err != nil {
		return nil, err
	}
	s.remove(sess)
	code := sess.terminate(ctx)
	s.log.Info("pty closed", "pty_id", sess.id, "exit_code", code)
	return &agentpb.PtyCloseResponse{ExitCode: int32(code)}, nil
}

// CloseAll ends every terminal the way pty_close does, closing its channel
// with reason NORMAL and message why (viewers see why their terminal went
// away), and forgets them. New terminals may open afterwards.
func (s *Service) CloseAll(ctx context.Context, why string) int {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	clear(s.sessions)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range all {
		ss.closeWhy.Store(&why)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ss.terminate(ctx)
			select { // the channel closes once the output is drained
			case <-ss.closed:
			case <-ctx.Done():
			}
		}()
	}
	wg.Wait()
	return len(all)
}

// Shutdown kills every terminal and refuses new ones (agent exit).
func (s *Service) Shutdown(ctx context.Context) {
	s.mu.Lock()
	if !s.closed {
		close(s.stopReap)
	}
	s.closed = true
	reaping := s.reaping
	all := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		all = append(all, ss)
	}
	clear(s.sessions)
	pumps := make([]*session, 0, len(s.pumps))
	for ss := range s.pumps {
		pumps = append(pumps, ss)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, ss := range all {
		wg.Add(1)
		go func() { defer wg.Done(); ss.terminate(ctx) }()
	}
	wg.Wait()
	if reaping {
		<-s.reapDone
	}
	// Every pump, including those of terminals already closed, delivers
	// its tail and StreamClose (bounded by the channel's CloseGrace) or ctx ends.
	for _, ss := range pumps {
		select {
		case <-ss.finished:
		case <-ctx.Done():
			return
		}
	}
}

// pumpFinished forgets a session whose pump has ended.
func (s *Service) pumpFinished(sess *session) {
	s.mu.Lock()
	delete(s.pumps, sess)
	s.mu.Unlock()
}

// Len is the number of terminals held (open or exited and not yet closed).
func (s *Service) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

func (s *Service) lookup(id string) (*session, error) {
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil {
		return nil, agenterr.New(agentpb.ErrorCode_ERROR_CODE_NOT_FOUND, "no open pty: %s", id)
	}
	return sess, nil
}

func (s *Service) remove(sess *session) {
	s.mu.Lock()
	if s.sessions[sess.id] == sess {
		delete(s.sessions, sess.id)
	}
	s.mu.Unlock()
}

// environ is the agent env + req.env (invalid entries skipped), then TERM =
// req.term or xterm-256color.
func (s *Service) environ(req *agentpb.PtyOpenRequest) []string {
	over := make(map[string]string, len(req.GetEnv())+1)
	for k, v := range req.GetEnv() {
		// TERM is the request's term field's.
		if envmerge.Check(k, v) == nil && !envmerge.Host.Equal(k, "TERM") {
			over[k] = v
		}
	}
	term := req.GetTerm()
	if term == "" {
		term = DefaultTerm
	}
	over["TERM"] = term
	env, _ := envmerge.Merge(s.opts.Env(), over) // entries checked above
	return env
}

// cwd resolves the request cwd against the workspace; anything that is not
// an existing directory falls back to the user's home (then the root).
func (s *Service) cwd(p string) string {
	if dir, err := s.opts.Root.Resolve(p); err == nil {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			return dir
		}
	}
	if home, err := os.UserHomeDir(); err == nil {
		if fi, err := os.Stat(home); err == nil && fi.IsDir() {
			return home
		}
	}
	dir, _ := s.opts.Root.Resolve("")
	return dir
}

func lookupEnv(env []string, key string) string {
	v, _ := envmerge.Lookup(env, key)
	return v
}

// dim applies the spawn rule: 0 or > 65535 means the default.
func dim(v uint32, def uint16) uint16 {
	if v == 0 || v > MaxDim {
		return def
	}
	return uint16(v)
}

func clamp(v uint32) uint16 {
	return uint16(max(1, min(v, MaxDim)))
}
