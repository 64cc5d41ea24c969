//go:build linux

package desktop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/backoff"
	"github.com/opengeni/opengeni-agent/internal/proctree"
)

// Where X servers keep their sockets and locks; variables for tests.
var (
	xSocketDir = "/tmp/.X11-unix"
	xLockDir   = "/tmp"
)

const (
	firstVirtualDisplay = 99
	virtualDisplaySpan  = 200 // displays :99 .. :298 are tried
	xvfbReadyTimeout    = 4 * time.Second
	xvfbReadyPoll       = 50 * time.Millisecond
)

func xSocketPath(n int) string { return filepath.Join(xSocketDir, "X"+strconv.Itoa(n)) }
func xLockPath(n int) string   { return filepath.Join(xLockDir, ".X"+strconv.Itoa(n)+"-lock") }

// socketLive reports whether an X server accepts connections on display n.
func socketLive(n int) bool {
	c, err := net.DialTimeout("unix", xSocketPath(n), time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// lockOwnerAlive reports whether the lock file of display n names a live
// process (an X server that is still starting has a lock but no socket).
func lockOwnerAlive(n int) bool {
	b, err := os.ReadFile(xLockPath(n))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	err = syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// reclaimStale frees display n when its lock or socket is left over from a
// dead server: the socket does not accept a connection and the lock's
// process is gone (agent.md §5.9, plus the pid check). It reports whether
// n is free afterwards.
func reclaimStale(n int) bool {
	_, lockErr := os.Lstat(xLockPath(n))
	_, sockErr := os.Lstat(xSocketPath(n))
	if lockErr != nil && sockErr != nil {
		return true
	}
	if socketLive(n) || lockOwnerAlive(n) {
		return false
	}
	_ = os.Remove(xLockPath(n))
	_ = os.Remove(xSocketPath(n))
	_, lockErr = os.Lstat(xLockPath(n))
	_, sockErr = os.Lstat(xSocketPath(n))
	return lockErr != nil && sockErr != nil
}

// virtualDisplay is a supervised Xvfb: restarted with backoff on the same
// display if it dies, killed by stop.
type virtualDisplay struct {
	name   string
	n      int
	path   string
	w, h   int
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// startVirtualDisplay starts Xvfb at w×h on the first free display ≥ :99
// and waits until it accepts connections.
func startVirtualDisplay(ctx context.Context, xvfb string, w, h int, log *slog.Logger) (*virtualDisplay, error) {
	if xvfb == "" {
		xvfb = "Xvfb"
	}
	path, err := exec.LookPath(xvfb)
	if err != nil {
		return nil, agenterr.Unsupported("Xvfb is not installed; install it to use --virtual-desktop")
	}
	var lastErr error
	for n := firstVirtualDisplay; n < firstVirtualDisplay+virtualDisplaySpan; n++ {
		if !reclaimStale(n) {
			continue
		}
		p, err := spawnXvfb(ctx, path, n, w, h)
		if err != nil {
			lastErr = err
			// Another server won the race for n, or Xvfb itself fails:
			// try the next display a few times, then give up.
			if errors.Is(err, errXvfbExited) && socketLive(n) {
				continue
			}
			return nil, err
		}
		sctx, cancel := context.WithCancel(context.Background())
		vd := &virtualDisplay{name: ":" + strconv.Itoa(n), n: n, path: path, w: w, h: h,
			log: log.With("component", "xvfb", "display", n), cancel: cancel, done: make(chan struct{})}
		go vd.supervise(sctx, p)
		return vd, nil
	}
	if lastErr == nil {
		lastErr = errors.New("every display from :99 is taken")
	}
	return nil, agenterr.FromIO("start Xvfb", lastErr)
}

//lint:ignore ST1005 Xvfb is a program's name
var errXvfbExited = errors.New("Xvfb exited during startup")

// xvfbProc is a started Xvfb, leading its own process tree, and the result
// of its Wait.
type xvfbProc struct {
	tree   *proctree.Tree
	exited chan error
}

// xvfbStopGrace is how long Xvfb has to exit on SIGTERM (cleaning up its
// lock and socket) before it is killed.
const xvfbStopGrace = 2 * time.Second

// spawnXvfb starts Xvfb on display n and waits for its socket.
func spawnXvfb(ctx context.Context, path string, n, w, h int) (*xvfbProc, error) {
	cmd := exec.Command(path, ":"+strconv.Itoa(n), "-screen", "0", fmt.Sprintf("%dx%dx24", w, h),
		"-nolisten", "tcp", "-noreset")
	// Its own group, killed with the agent: a display the agent can no
	// longer serve is only in the way (the next start reclaims its lock).
	tree := proctree.New(cmd, proctree.Options{KillOnDrop: true})
	if err := tree.Start(); err != nil {
		return nil, agenterr.FromIO("spawn Xvfb", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- tree.Wait() }()
	kill := func() {
		_ = tree.Kill()
		<-exited
		tree.Release()
	}
	deadline := time.NewTimer(xvfbReadyTimeout)
	defer deadline.Stop()
	poll := time.NewTicker(xvfbReadyPoll)
	defer poll.Stop()
	for {
		select {
		case err := <-exited:
			tree.Release()
			return nil, fmt.Errorf("%w: %v", errXvfbExited, err)
		case <-ctx.Done():
			kill()
			return nil, ctx.Err()
		case <-deadline.C:
			kill()
			//lint:ignore ST1005 Xvfb is a program's name
			return nil, agenterr.FromIO("start Xvfb", errors.New("Xvfb did not become ready within 4s"))
		case <-poll.C:
			if socketLive(n) {
				return &xvfbProc{tree: tree, exited: exited}, nil
			}
		}
	}
}

func (vd *virtualDisplay) supervise(ctx context.Context, p *xvfbProc) {
	defer close(vd.done)
	bo := &backoff.Backoff{Policy: backoff.Exponential(500*time.Millisecond, 30*time.Second)}
	for {
		select {
		case <-ctx.Done():
			_ = p.tree.Stop(xvfbStopGrace)
			p.tree.Release()
			reclaimStale(vd.n)
			return
		case err := <-p.exited:
			p.tree.Release()
			vd.log.Warn("Xvfb exited; restarting", "err", err)
		}
		for {
			if bo.Sleep(ctx) != nil {
				return
			}
			reclaimStale(vd.n)
			next, err := spawnXvfb(ctx, vd.path, vd.n, vd.w, vd.h)
			if err == nil {
				p = next
				bo.Reset()
				break
			}
			if ctx.Err() != nil {
				return
			}
			vd.log.Warn("Xvfb restart failed", "err", err)
		}
	}
}

// stop kills Xvfb and waits for the supervisor.
func (vd *virtualDisplay) stop() {
	vd.cancel()
	<-vd.done
}
