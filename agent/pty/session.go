package pty

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// DefaultWriteTimeout bounds one pty_write when the request has no deadline:
// a program that never reads its input must not pin the op forever.
const DefaultWriteTimeout = 30 * time.Second

// session is one terminal and its pump. The pump is four goroutines:
//
//	output: PTY → Channel.Send (≤ ChunkSize per frame; Send blocks while the
//	        relay is away, so the PTY is throttled, never truncated)
//	input:  Channel.Recv → PTY (each inbound frame once, in order)
//	wait:   reaps the child and keeps its exit code
//	finish: after the exit, drains the output, then closes the channel
//	        with PROCESS_EXIT "pty exited"
//
// A relay reconnect touches none of them: the Channel reconnects inside.
type session struct {
	svc   *Service
	id    string
	ch    *stream.Channel
	proc  process
	argv0 string
	log   *slog.Logger

	writeMu sync.Mutex

	releaseLive func()       // gives the MaxLive place back when the process has exited
	lastInputNs atomic.Int64 // svc.opts.Now() of the last input, in unix nanoseconds
	expiring    atomic.Bool  // the idle reaper is closing it
	// closeWhy, when set, is why the agent closed the terminal (the owner
	// paused the machine): the channel closes NORMAL with it, not PROCESS_EXIT.
	closeWhy atomic.Pointer[string]

	gotOutput chan struct{} // first output read from the PTY
	outOnce   sync.Once
	ready     chan struct{} // first frame shipped to the relay, or PTY EOF
	readyOnce sync.Once
	pumpDead  chan struct{} // the output pump ended without becoming ready
	// readyFailed: the first frame could not be flushed to the relay;
	// readyErr (written before the close) says why.
	readyFailed chan struct{}
	readyErr    error
	outDone     chan struct{} // the output pump ended

	exited   chan struct{}
	exitCode int
	closed   chan struct{} // the channel has been closed
	finished chan struct{} // finish has returned
}

func newSession(svc *Service, ch *stream.Channel, proc process, argv0 string, releaseLive func()) *session {
	s := &session{
		svc: svc, id: ch.ID(), ch: ch, proc: proc, argv0: argv0, releaseLive: releaseLive,
		log:         svc.log.With("pty_id", ch.ID()),
		gotOutput:   make(chan struct{}),
		ready:       make(chan struct{}),
		pumpDead:    make(chan struct{}),
		readyFailed: make(chan struct{}),
		outDone:     make(chan struct{}),
		exited:      make(chan struct{}),
		closed:      make(chan struct{}),
		finished:    make(chan struct{}),
	}
	s.touch()
	return s
}

// touch records input: the terminal is in use.
func (s *session) touch() { s.lastInputNs.Store(s.svc.opts.Now().UnixNano()) }

func (s *session) lastInput() time.Time { return time.Unix(0, s.lastInputNs.Load()) }

func (s *session) start() {
	go s.waitLoop()
	go s.outputLoop()
	go s.inputLoop()
	go s.finish()
	if d := s.svc.opts.NudgeAfter; d > 0 {
		go s.nudge(d)
	}
}

func (s *session) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

func (s *session) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

func (s *session) waitLoop() {
	code, err := s.proc.Wait()
	if err != nil {
		s.log.Debug("pty wait", "err", err)
	}
	s.exitCode = code
	// The place is free before the exit is observable: pty_close (which
	// waits on exited) must find the live count already lowered.
	s.releaseLive()
	close(s.exited)
	s.log.Info("pty process exited", "exit_code", code)
}

func (s *session) outputLoop() {
	defer close(s.outDone)
	buf := make([]byte, ChunkSize)
	for {
		n, rerr := s.proc.Read(buf)
		if n > 0 {
			s.outOnce.Do(func() { close(s.gotOutput) })
			if err := s.ch.Send(context.Background(), buf[:n]); err != nil {
				s.log.Debug("pty output stopped: channel closed")
				close(s.pumpDead)
				return
			}
			s.readyOnce.Do(func() {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), s.svc.opts.ReadyTimeout)
					defer cancel()
					if err := s.ch.Flush(ctx); err != nil {
						s.readyErr = err
						close(s.readyFailed)
						return
					}
					close(s.ready)
				}()
			})
		}
		if rerr != nil {
			// EIO (Linux) or EOF: every slave fd is closed; ErrClosed: we
			// released the terminal after the exit.
			s.markReady()
			return
		}
	}
}

func (s *session) inputLoop() {
	for data := range s.ch.Recv() {
		s.touch()
		s.writeMu.Lock()
		_, err := s.proc.Write(data)
		s.writeMu.Unlock()
		if err != nil && !s.hasExited() {
			s.log.Debug("pty input write failed", "err", err)
		}
	}
}

// write serves pty_write: straight to the terminal, serialized with relay
// input so neither splits the other.
func (s *session) write(ctx context.Context, data []byte) (int, error) {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(DefaultWriteTimeout)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if d, ok := s.proc.(interface{ SetWriteDeadline(time.Time) error }); ok {
		d.SetWriteDeadline(dl)
		defer d.SetWriteDeadline(time.Time{})
	}
	n, err := s.proc.Write(data)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if n > 0 {
			return n, nil // a partial write is reported as such
		}
		return 0, agenterr.New(agentpb.ErrorCode_ERROR_CODE_TIMEOUT,
			"timed out: pty input is full (the program is not reading)")
	}
	return n, err
}

// nudge writes one "\n" when the command stays silent: the terminal echoes
// it, so a quiet program still ships a first frame (the reference writes it
// unconditionally; a shell prints its prompt long before).
func (s *session) nudge(after time.Duration) {
	t := time.NewTimer(after)
	defer t.Stop()
	select {
	case <-t.C:
		s.writeMu.Lock()
		s.proc.Write([]byte("\n"))
		s.writeMu.Unlock()
	case <-s.gotOutput:
	case <-s.exited:
	case <-s.closed:
	}
}

// finish runs once the process has exited: drain the output (bounded, since
// a background job may hold the terminal open), release the terminal, ship
// the tail and close the channel with PROCESS_EXIT. The exit code is kept
// for pty_close for ExitRetention.
func (s *session) finish() {
	<-s.exited
	t := time.NewTimer(s.svc.opts.HangupGrace)
	select {
	case <-s.outDone:
	case <-t.C:
	}
	t.Stop()
	s.proc.Close()
	<-s.outDone
	reason, msg := agentpb.StreamCloseReason_STREAM_CLOSE_REASON_PROCESS_EXIT, "pty exited"
	if why := s.closeWhy.Load(); why != nil {
		reason, msg = agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, *why
	}
	if err := s.ch.Close(reason, msg); err != nil {
		s.log.Warn("pty channel close not delivered", "err", err)
	}
	close(s.closed)
	time.AfterFunc(s.svc.opts.ExitRetention, func() { s.svc.remove(s) })
	s.svc.pumpFinished(s)
	close(s.finished)
}

// terminate hangs the terminal up, escalates to SIGKILL, and returns the
// exit code (-1 if the process could not be reaped in time).
func (s *session) terminate(ctx context.Context) int {
	grace := s.svc.opts.HangupGrace
	if !s.hasExited() {
		s.proc.Hangup()
		if !s.waitExit(ctx, grace) {
			s.proc.Kill()
			s.waitExit(ctx, grace)
		}
	}
	if !s.hasExited() {
		s.proc.Close() // let the pump wind down; the reaper keeps waiting
		return -1
	}
	return s.exitCode
}

// expire ends an idle terminal: hang-up, then SIGKILL to its whole process
// group (a job that ignored the hang-up goes too).
func (s *session) expire(ctx context.Context) {
	code := s.terminate(ctx)
	if err := s.proc.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		s.log.Debug("pty idle: kill process group", "err", err)
	}
	s.log.Info("pty closed after idle timeout", "exit_code", code)
}

func (s *session) waitExit(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.exited:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return s.hasExited()
}

// shutdown ends a session that never became visible (pty_open failed).
func (s *session) shutdown() {
	s.proc.Kill()
	s.proc.Close()
}
