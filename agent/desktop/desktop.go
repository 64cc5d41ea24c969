package desktop

import (
	"context"
	"errors"
	"image"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// HeadlessMessage is the reason a host without a display refuses
// screenshots and input (agent.md §5.8).
const HeadlessMessage = "no desktop display available on this host (headless; enable --virtual-desktop)"

// NotStartedMessage is the same refusal on a host that may start a virtual
// display (--virtual-desktop) but has not yet: desktop_ensure starts it.
// Its detail carries DetailVirtualDisplay = VirtualDisplayNotStarted.
const NotStartedMessage = "no desktop display started yet on this host (headless; desktop_ensure starts the virtual display --virtual-desktop allows)"

// DetailVirtualDisplay is the detail key of a headless refusal on a host
// allowed to start a virtual display; its value is VirtualDisplayNotStarted.
const (
	DetailVirtualDisplay     = "virtual_display"
	VirtualDisplayNotStarted = "not_started"
)

// Defaults.
const (
	DefaultFPS           = 5
	DefaultMaxFrameBytes = 1 << 20
	DefaultWidth         = 1280
	DefaultHeight        = 800
	// PumpReadyTimeout bounds how long Ensure waits for the first frame.
	PumpReadyTimeout = 5 * time.Second
	// DesktopPort is the logical relay port of desktop channels.
	DesktopPort = 6080
)

// Options configures a Desktop. The zero value is a desktop on $DISPLAY
// that refuses input (no consent) and never starts a virtual display.
type Options struct {
	// Display is the X11 display to use on Linux; "" means $DISPLAY, or
	// ":0" when DISPLAY is unset (an empty DISPLAY means none). Ignored on
	// macOS and Windows.
	Display string
	// Consent reports whether the owner consented to screen control. It is
	// called on every input event; nil means never.
	Consent func() bool
	// AllowVirtualDisplay lets Ensure start Xvfb when there is no display.
	AllowVirtualDisplay bool
	// Registrar opens desktop channels on the relay; nil makes Ensure
	// answer UNSUPPORTED.
	Registrar Registrar
	Logger    *slog.Logger
	// FPS caps the pump's capture rate (default 5).
	FPS int
	// MaxFrameBytes is the largest PNG the pump sends; bigger frames are
	// downscaled like screenshots (default 1 MiB).
	MaxFrameBytes int
	// XvfbPath is the Xvfb binary (default: "Xvfb" on PATH).
	XvfbPath string
	// ExportDisplay is called with the display name once Ensure has started
	// a virtual display, so processes the agent spawns later draw on it.
	// Default: os.Setenv("DISPLAY", name).
	ExportDisplay func(name string)
	// PumpReadyTimeout overrides PumpReadyTimeout (tests).
	PumpReadyTimeout time.Duration
}

// screen is a capture target: one display.
type screen interface {
	// probe reports the display's geometry, or an error wrapping
	// errNoDisplay that says why there is none.
	probe() (*agentpb.Display, error)
	// capture grabs the whole display as opaque RGBA.
	capture(ctx context.Context) (*image.RGBA, error)
	close()
}

// injector performs input on a display. Coordinates are display pixels
// (the capture's native size).
type injector interface {
	pointer(x, y int, action agentpb.PointerAction, button agentpb.PointerButton) error
	key(k keyCombo, action agentpb.KeyAction) error
	text(s string) error
	scroll(x, y, dx, dy int) error
}

// errNoDisplay marks "this host has no usable display"; it maps to
// UNSUPPORTED with HeadlessMessage.
var errNoDisplay = errors.New("no display")

// noDisplay is errNoDisplay with the concrete reason.
type noDisplay struct{ reason string }

func (e *noDisplay) Error() string { return e.reason }
func (e *noDisplay) Is(t error) bool {
	return t == errNoDisplay
}

func noDisplayf(reason string) error { return &noDisplay{reason: reason} }

// Desktop serves desktop_screenshot, desktop_input and desktop_ensure.
// It is safe for concurrent use.
type Desktop struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex // guards scr, inj, injErr
	scr    screen
	inj    injector
	injErr error

	ensureMu sync.Mutex // serializes Ensure and Close
	vd       *virtualDisplay
	live     *liveChannel
	closed   bool
}

// New builds a Desktop. It does not touch the display until first use.
func New(opts Options) *Desktop {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.FPS <= 0 {
		opts.FPS = DefaultFPS
	}
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if opts.ExportDisplay == nil {
		opts.ExportDisplay = func(name string) { _ = os.Setenv("DISPLAY", name) }
	}
	if opts.PumpReadyTimeout <= 0 {
		opts.PumpReadyTimeout = PumpReadyTimeout
	}
	d := &Desktop{opts: opts, log: opts.Logger}
	d.scr = openScreen(resolveDisplayName(opts.Display))
	return d
}

// resolveDisplayName applies the $DISPLAY rule of agent.md §5.9.
func resolveDisplayName(name string) string {
	if name != "" {
		return name
	}
	v, ok := os.LookupEnv("DISPLAY")
	if !ok {
		return ":0"
	}
	return v
}

// target returns the current capture target.
func (d *Desktop) target() screen {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.scr
}

// setTarget switches capture and input to s.
func (d *Desktop) setTarget(s screen) {
	d.mu.Lock()
	old := d.scr
	d.scr, d.inj, d.injErr = s, nil, nil
	d.mu.Unlock()
	if old != nil && old != s {
		old.close()
	}
}

// injector returns the input backend for the current target, or an error
// saying why input is unavailable in this build or session.
func (d *Desktop) injector() (injector, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.inj == nil && d.injErr == nil {
		d.inj, d.injErr = newInjector(d.scr)
	}
	return d.inj, d.injErr
}

// Capability reports whether this host has a desktop, the display, and a
// human-readable reason when desktop is false or input is unavailable.
func (d *Desktop) Capability() (desktop bool, display *agentpb.Display, reason string) {
	disp, err := d.target().probe()
	if err != nil {
		return false, nil, err.Error()
	}
	if _, ierr := d.injector(); ierr != nil {
		return true, disp, "desktop input unavailable: " + ierr.Error()
	}
	return true, disp, ""
}

// CloseStream stops the pump and closes the live desktop channel with
// reason NORMAL and message why; a later desktop_ensure opens a new one.
func (d *Desktop) CloseStream(why string) bool {
	if d == nil {
		return false
	}
	d.ensureMu.Lock()
	defer d.ensureMu.Unlock()
	if d.live == nil {
		return false
	}
	d.live.stopWith(why)
	d.live = nil
	return true
}

// Close stops the pump, closes the desktop channel and stops a virtual
// display this Desktop started.
func (d *Desktop) Close() error {
	d.ensureMu.Lock()
	defer d.ensureMu.Unlock()
	d.closed = true
	if d.live != nil {
		d.live.stop()
		d.live = nil
	}
	if d.vd != nil {
		d.vd.stop()
		d.vd = nil
	}
	d.mu.Lock()
	if d.scr != nil {
		d.scr.close()
	}
	d.mu.Unlock()
	return nil
}

// headless is the UNSUPPORTED answer for a host without a display; the
// concrete reason travels in detail. A host allowed to start a virtual
// display says so, rather than asking for the flag it already has.
func (d *Desktop) headless(err error) error {
	msg, detail := HeadlessMessage, map[string]string{"reason": err.Error()}
	if d.opts.AllowVirtualDisplay {
		msg, detail[DetailVirtualDisplay] = NotStartedMessage, VirtualDisplayNotStarted
	}
	e := agenterr.Unsupported("%s", msg)
	e.Detail = detail
	e.Err = err
	return e
}

// captureErr maps a capture failure onto the wire model.
func (d *Desktop) captureErr(err error) error {
	if errors.Is(err, errNoDisplay) {
		return d.headless(err)
	}
	var ae *agenterr.Error
	if errors.As(err, &ae) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return agenterr.FromIO("capture display", err)
}
