//go:build linux

package desktop

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jezek/xgb"
	"github.com/jezek/xgb/xproto"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// startXvfb starts a private Xvfb of w×h and returns its display name. It
// skips the test (with the reason) only when Xvfb cannot be started.
func startXvfb(tb testing.TB, w, h int) string {
	tb.Helper()
	path, err := exec.LookPath("Xvfb")
	if err != nil {
		tb.Skip("Xvfb is not installed (apt-get install xvfb); skipping the X11 test")
	}
	// Start well above :99 so Ensure's own scan and other test processes
	// do not collide with us; Xvfb refuses a taken display and we move on.
	base := 400 + os.Getpid()%2000
	for n := base; n < base+50; n++ {
		if _, err := os.Stat(xSocketPath(n)); err == nil {
			continue
		}
		cmd := exec.Command(path, ":"+strconv.Itoa(n), "-screen", "0", fmt.Sprintf("%dx%dx24", w, h), "-nolisten", "tcp", "-noreset")
		if err := cmd.Start(); err != nil {
			tb.Skipf("cannot start Xvfb: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			select {
			case <-exited:
				deadline = time.Time{}
				continue
			default:
			}
			if c, err := net.Dial("unix", xSocketPath(n)); err == nil {
				_ = c.Close()
				tb.Cleanup(func() {
					_ = cmd.Process.Kill()
					<-exited
				})
				return ":" + strconv.Itoa(n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = cmd.Process.Kill()
		<-exited
	}
	tb.Skip("Xvfb could not be started on any display (see above); skipping the X11 test")
	return ""
}

// xclient is a small X client for tests: it draws, makes windows and
// reads their events.
type xclient struct {
	tb     testing.TB
	c      *xgb.Conn
	root   xproto.Window
	events chan xgb.Event
}

func dialX(tb testing.TB, name string) *xclient {
	tb.Helper()
	c, err := xgb.NewConnDisplay(name)
	if err != nil {
		tb.Fatalf("connect %s: %v", name, err)
	}
	tb.Cleanup(c.Close)
	x := &xclient{tb: tb, c: c, root: xproto.Setup(c).DefaultScreen(c).Root, events: make(chan xgb.Event, 4096)}
	go func() {
		for {
			ev, err := c.WaitForEvent()
			if ev == nil && err == nil {
				close(x.events)
				return
			}
			if ev != nil {
				x.events <- ev
			}
		}
	}()
	return x
}

func pixel(c color.RGBA) uint32 { return uint32(c.R)<<16 | uint32(c.G)<<8 | uint32(c.B) }

// fill paints r on the root window in col.
func (x *xclient) fill(r image.Rectangle, col color.RGBA) {
	x.tb.Helper()
	gc, err := xproto.NewGcontextId(x.c)
	if err != nil {
		x.tb.Fatal(err)
	}
	if err := xproto.CreateGCChecked(x.c, gc, xproto.Drawable(x.root), xproto.GcForeground, []uint32{pixel(col)}).Check(); err != nil {
		x.tb.Fatal(err)
	}
	defer xproto.FreeGC(x.c, gc)
	if err := xproto.PolyFillRectangleChecked(x.c, xproto.Drawable(x.root), gc, []xproto.Rectangle{{
		X: int16(r.Min.X), Y: int16(r.Min.Y), Width: uint16(r.Dx()), Height: uint16(r.Dy()),
	}}).Check(); err != nil {
		x.tb.Fatal(err)
	}
}

// put draws img on the root window at its bounds (in strips that fit the
// core request size).
func (x *xclient) put(img *image.RGBA) {
	x.tb.Helper()
	gc, err := xproto.NewGcontextId(x.c)
	if err != nil {
		x.tb.Fatal(err)
	}
	if err := xproto.CreateGCChecked(x.c, gc, xproto.Drawable(x.root), 0, nil).Check(); err != nil {
		x.tb.Fatal(err)
	}
	defer xproto.FreeGC(x.c, gc)
	b := img.Bounds()
	rows := max(1, 200000/(4*b.Dx()))
	buf := make([]byte, 4*b.Dx()*rows)
	for y := b.Min.Y; y < b.Max.Y; y += rows {
		n := min(rows, b.Max.Y-y)
		for yy := 0; yy < n; yy++ {
			src := img.Pix[(y+yy-b.Min.Y)*img.Stride:]
			dst := buf[yy*4*b.Dx():]
			for i := 0; i < b.Dx(); i++ {
				dst[4*i], dst[4*i+1], dst[4*i+2], dst[4*i+3] = src[4*i+2], src[4*i+1], src[4*i], 0
			}
		}
		if err := xproto.PutImageChecked(x.c, xproto.ImageFormatZPixmap, xproto.Drawable(x.root), gc,
			uint16(b.Dx()), uint16(n), int16(b.Min.X), int16(y), 0, 24, buf[:4*b.Dx()*n]).Check(); err != nil {
			x.tb.Fatal(err)
		}
	}
}

// window creates, maps and focuses a window covering r that reports key,
// button and motion events.
func (x *xclient) window(r image.Rectangle) xproto.Window {
	x.tb.Helper()
	w, err := xproto.NewWindowId(x.c)
	if err != nil {
		x.tb.Fatal(err)
	}
	scr := xproto.Setup(x.c).DefaultScreen(x.c)
	mask := uint32(xproto.EventMaskKeyPress | xproto.EventMaskKeyRelease | xproto.EventMaskButtonPress |
		xproto.EventMaskButtonRelease | xproto.EventMaskPointerMotion | xproto.EventMaskExposure)
	if err := xproto.CreateWindowChecked(x.c, scr.RootDepth, w, x.root, int16(r.Min.X), int16(r.Min.Y),
		uint16(r.Dx()), uint16(r.Dy()), 0, xproto.WindowClassInputOutput, scr.RootVisual,
		xproto.CwBackPixel|xproto.CwOverrideRedirect|xproto.CwEventMask, []uint32{0xffffff, 1, mask}).Check(); err != nil {
		x.tb.Fatal(err)
	}
	if err := xproto.MapWindowChecked(x.c, w).Check(); err != nil {
		x.tb.Fatal(err)
	}
	// Wait for the map (first Expose), then focus.
	x.next(func(ev xgb.Event) bool { _, ok := ev.(xproto.ExposeEvent); return ok })
	if err := xproto.SetInputFocusChecked(x.c, xproto.InputFocusPointerRoot, w, xproto.TimeCurrentTime).Check(); err != nil {
		x.tb.Fatal(err)
	}
	return w
}

// next waits for the first event matching f.
func (x *xclient) next(f func(xgb.Event) bool) xgb.Event {
	x.tb.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-x.events:
			if f(ev) {
				return ev
			}
		case <-timeout:
			x.tb.Fatal("timed out waiting for an X event")
			return nil
		}
	}
}

// drain returns the events already queued after a round trip.
func (x *xclient) drain() []xgb.Event {
	_, _ = xproto.GetInputFocus(x.c).Reply()
	time.Sleep(50 * time.Millisecond)
	var out []xgb.Event
	for {
		select {
		case ev := <-x.events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

// pointer reads the real pointer position.
func (x *xclient) pointer() (int, int) {
	x.tb.Helper()
	r, err := xproto.QueryPointer(x.c, x.root).Reply()
	if err != nil {
		x.tb.Fatal(err)
	}
	return int(r.RootX), int(r.RootY)
}

// typed decodes KeyPress events into text using the current keyboard
// mapping (re-read, since the injector may have bound spare keycodes).
func (x *xclient) typed(evs []xgb.Event) (string, []xproto.KeyPressEvent) {
	x.tb.Helper()
	kb, err := loadKeyboard(x.c)
	if err != nil {
		x.tb.Fatal(err)
	}
	var out []rune
	var presses []xproto.KeyPressEvent
	for _, ev := range evs {
		kp, ok := ev.(xproto.KeyPressEvent)
		if !ok {
			continue
		}
		presses = append(presses, kp)
		col := 0
		if kp.State&xproto.ModMaskShift != 0 {
			col = 1
		}
		ks := kb.syms[int(kp.Detail-kb.min)*kb.per+col]
		if col == 1 && ks == 0 {
			ks = kb.syms[int(kp.Detail-kb.min)*kb.per]
		}
		switch {
		case ks >= 0x20 && ks <= 0xff:
			out = append(out, rune(ks))
		case ks >= 0x01000000:
			out = append(out, rune(ks-0x01000000))
		case ks == 0xff0d:
			out = append(out, '\n')
		}
	}
	return string(out), presses
}

// fakeChannel is a relay channel double that records frames.
type fakeChannel struct {
	id     string
	mu     sync.Mutex
	frames [][]byte
	sent   chan struct{} // one token per frame
	input  chan *agentpb.DesktopInput
	done   chan struct{}
	once   sync.Once
	closes int
}

func newFakeChannel(id string) *fakeChannel {
	return &fakeChannel{id: id, sent: make(chan struct{}, 1024), input: make(chan *agentpb.DesktopInput, 16), done: make(chan struct{})}
}

func (f *fakeChannel) Send(_ context.Context, data []byte) error {
	f.mu.Lock()
	f.frames = append(f.frames, append([]byte(nil), data...))
	f.mu.Unlock()
	f.sent <- struct{}{}
	return nil
}

func (f *fakeChannel) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.frames)
}

func (f *fakeChannel) frame(i int) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.frames[i]
}

func (f *fakeChannel) Input() <-chan *agentpb.DesktopInput { return f.input }
func (f *fakeChannel) Done() <-chan struct{}               { return f.done }
func (f *fakeChannel) Descriptor() *agentpb.StreamChannel {
	return &agentpb.StreamChannel{ChannelId: f.id, Kind: agentpb.StreamKind_STREAM_KIND_DESKTOP, Port: DesktopPort}
}
func (f *fakeChannel) Close(agentpb.StreamCloseReason, string) error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	f.once.Do(func() { close(f.done) })
	return nil
}

// fakeRegistrar hands out fake channels and counts opens.
type fakeRegistrar struct {
	mu    sync.Mutex
	opens []*fakeChannel
}

func (r *fakeRegistrar) OpenDesktop(context.Context) (Channel, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := newFakeChannel(fmt.Sprintf("ch-test-%d", len(r.opens)+1))
	r.opens = append(r.opens, ch)
	return ch, nil
}
