package desktop

import (
	"context"
	"errors"
	"fmt"
	"image"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/agent/stream"
	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// Channel is a registered desktop channel on the relay; *stream.Channel
// satisfies it.
type Channel interface {
	FrameSink
	// Input delivers the viewer's DesktopInput events; closed at the end.
	Input() <-chan *agentpb.DesktopInput
	// Done is closed when the channel has ended.
	Done() <-chan struct{}
	Descriptor() *agentpb.StreamChannel
	Close(reason agentpb.StreamCloseReason, message string) error
}

// Registrar opens desktop channels on the relay.
type Registrar interface {
	OpenDesktop(ctx context.Context) (Channel, error)
}

// StreamRegistrar opens desktop channels (kind DESKTOP, port 6080) with a
// relay dialer.
func StreamRegistrar(d *stream.Dialer) Registrar { return dialerRegistrar{d} }

type dialerRegistrar struct{ d *stream.Dialer }

func (r dialerRegistrar) OpenDesktop(ctx context.Context) (Channel, error) {
	ch, err := r.d.Open(ctx, agentpb.StreamKind_STREAM_KIND_DESKTOP, DesktopPort)
	if err != nil {
		return nil, err
	}
	return ch, nil
}

// liveChannel is the desktop channel Ensure registered and its pump.
type liveChannel struct {
	ch     Channel
	cancel context.CancelFunc
	done   chan struct{} // closed when the pump has returned
	once   sync.Once
}

func (l *liveChannel) alive() bool {
	select {
	case <-l.done:
		return false
	case <-l.ch.Done():
		return false
	default:
		return true
	}
}

func (l *liveChannel) stop() { l.stopWith("desktop closed") }

func (l *liveChannel) stopWith(why string) {
	l.once.Do(func() {
		l.cancel()
		<-l.done
		_ = l.ch.Close(agentpb.StreamCloseReason_STREAM_CLOSE_REASON_NORMAL, why)
	})
}

// Ensure makes sure there is a display and a live desktop channel
// streaming it. Without a display it starts a supervised Xvfb at the
// requested geometry (default 1280x800) when AllowVirtualDisplay is set.
// It is idempotent: while the channel lives, repeat calls return it (the
// requested geometry of a repeat call is ignored).
func (d *Desktop) Ensure(ctx context.Context, req *agentpb.DesktopEnsureRequest) (*agentpb.DesktopEnsureResponse, error) {
	d.ensureMu.Lock()
	defer d.ensureMu.Unlock()
	if d.closed {
		return nil, agenterr.Unsupported("desktop is shut down")
	}
	disp, err := d.ensureDisplay(ctx, int(req.GetWidth()), int(req.GetHeight()))
	if err != nil {
		return nil, err
	}
	if d.live != nil && d.live.alive() {
		return &agentpb.DesktopEnsureResponse{Channel: d.live.ch.Descriptor(), Display: disp}, nil
	}
	if d.live != nil {
		d.live.stop()
		d.live = nil
	}
	if d.opts.Registrar == nil {
		return nil, agenterr.Unsupported("desktop streaming needs a relay, and none is configured")
	}
	ch, err := d.opts.Registrar.OpenDesktop(ctx)
	if err != nil {
		return nil, fmt.Errorf("open desktop channel: %w", err)
	}
	live, err := d.startPump(ch, nil, nil)
	if err != nil {
		return nil, err
	}
	d.live = live
	return &agentpb.DesktopEnsureResponse{Channel: ch.Descriptor(), Display: disp}, nil
}

// ensureDisplay probes the target and starts a virtual display when there
// is none and that is allowed.
func (d *Desktop) ensureDisplay(ctx context.Context, w, h int) (*agentpb.Display, error) {
	disp, err := d.target().probe()
	if err == nil {
		return disp, nil
	}
	if !errors.Is(err, errNoDisplay) {
		return nil, d.captureErr(err)
	}
	if !d.opts.AllowVirtualDisplay {
		e := agenterr.Unsupported("no desktop display available on this host (display_unavailable)")
		e.Detail = map[string]string{"reason": err.Error()}
		return nil, e
	}
	if d.vd != nil {
		d.vd.stop()
		d.vd = nil
	}
	if w <= 0 {
		w = DefaultWidth
	}
	if h <= 0 {
		h = DefaultHeight
	}
	vd, err := startVirtualDisplay(ctx, d.opts.XvfbPath, w, h, d.log)
	if err != nil {
		return nil, err
	}
	d.vd = vd
	d.setTarget(openScreen(vd.name))
	d.opts.ExportDisplay(vd.name)
	disp, err = d.target().probe()
	if err != nil {
		return nil, agenterr.FromIO("probe virtual display "+vd.name, err)
	}
	d.log.Info("virtual display started", "display", vd.name, "width", disp.Width, "height", disp.Height)
	return disp, nil
}

// startPump runs the pump on ch and waits until its first frame is out.
// tick and hook are test seams (nil: an FPS ticker, no hook).
func (d *Desktop) startPump(ch Channel, tick <-chan time.Time, hook func(bool)) (*liveChannel, error) {
	ctx, cancel := context.WithCancel(context.Background())
	var ticker *time.Ticker
	if tick == nil {
		ticker = time.NewTicker(time.Second / time.Duration(d.opts.FPS))
		tick = ticker.C
	}
	p := &pump{
		capture:   func(ctx context.Context) (*image.RGBA, error) { return d.target().capture(ctx) },
		sink:      ch,
		input:     ch.Input(),
		inject:    d.Inject,
		tick:      tick,
		maxFrame:  d.opts.MaxFrameBytes,
		log:       d.log.With("component", "desktop-pump", "channel", ch.Descriptor().GetChannelId()),
		ready:     make(chan struct{}),
		afterTick: hook,
	}
	live := &liveChannel{ch: ch, cancel: cancel, done: make(chan struct{})}
	errc := make(chan error, 1)
	go func() {
		defer close(live.done)
		if ticker != nil {
			defer ticker.Stop()
		}
		// The channel ending (relay close, Close) ends the pump.
		go func() {
			select {
			case <-ch.Done():
				cancel()
			case <-ctx.Done():
			}
		}()
		errc <- p.run(ctx)
	}()
	timer := time.NewTimer(d.opts.PumpReadyTimeout)
	defer timer.Stop()
	select {
	case <-p.ready:
		return live, nil
	case err := <-errc:
		live.stop()
		if err == nil {
			err = errors.New("channel ended")
		}
		return nil, agenterr.FromIO("desktop stream pump ended before it became ready", err)
	case <-timer.C:
		live.stop()
		return nil, &agenterr.Error{Code: agentpb.ErrorCode_ERROR_CODE_TIMEOUT, Retryable: true, Err: agenterr.ErrTimeout,
			Message: fmt.Sprintf("timed out: desktop stream pump did not become ready within %s", d.opts.PumpReadyTimeout)}
	}
}
