//go:build linux

package desktop

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jezek/xgb/xproto"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
	"github.com/opengeni/opengeni-agent/internal/opctx"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func consentFrom(b *atomic.Bool) func() bool { return b.Load }

func allow() func() bool { return func() bool { return true } }

func errCode(err error) agentpb.ErrorCode { return agenterr.ToProto(err).GetCode() }

func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode png: %v", err)
	}
	return img
}

func rgbaAt(img image.Image, x, y int) color.RGBA {
	r, g, b, a := img.At(x, y).RGBA()
	return color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
}

func TestScreenshotMatchesDrawnPixels(t *testing.T) {
	name := startXvfb(t, 640, 480)
	x := dialX(t, name)
	red, green, blue, white := color.RGBA{255, 0, 0, 255}, color.RGBA{0, 200, 0, 255}, color.RGBA{0, 0, 255, 255}, color.RGBA{255, 255, 255, 255}
	x.fill(image.Rect(0, 0, 640, 480), white)
	x.fill(image.Rect(10, 20, 110, 70), red)
	x.fill(image.Rect(300, 200, 340, 260), green)
	x.fill(image.Rect(600, 440, 640, 480), blue)

	d := New(Options{Display: name})
	defer d.Close()
	resp, err := d.Screenshot(context.Background(), &agentpb.DesktopScreenshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Width != 640 || resp.Height != 480 || resp.NativeWidth != 640 || resp.NativeHeight != 480 {
		t.Fatalf("geometry %dx%d native %dx%d, want 640x480 both", resp.Width, resp.Height, resp.NativeWidth, resp.NativeHeight)
	}
	img := decodePNG(t, resp.Png)
	if img.Bounds().Dx() != 640 || img.Bounds().Dy() != 480 {
		t.Fatalf("png is %v", img.Bounds())
	}
	for _, c := range []struct {
		x, y int
		want color.RGBA
	}{
		{10, 20, red}, {109, 69, red}, {110, 70, white}, {9, 20, white},
		{300, 200, green}, {339, 259, green}, {340, 259, white},
		{600, 440, blue}, {639, 479, blue}, {599, 479, white},
		{0, 0, white}, {320, 100, white},
	} {
		if got := rgbaAt(img, c.x, c.y); got != c.want {
			t.Errorf("pixel (%d,%d) = %v, want %v", c.x, c.y, got, c.want)
		}
	}
	ok, disp, reason := d.Capability()
	if !ok || disp.GetWidth() != 640 || disp.GetHeight() != 480 || disp.GetId() != name || !disp.GetVirtual() || reason != "" {
		t.Fatalf("Capability = %v %v %q", ok, disp, reason)
	}
}

// desktopLike draws a noisy "desktop" (text-like runs on windows over a
// gradient) that compresses like a real screen, not like a flat color.
func desktopLike(w, h int, seed uint64) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(seed, 7))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := img.PixOffset(x, y)
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = uint8(x*255/w), uint8(y*255/h), 160, 255
		}
	}
	for win := 0; win < 6; win++ {
		r := image.Rect(rng.IntN(w/2), rng.IntN(h/2), 0, 0)
		r.Max = image.Pt(min(w, r.Min.X+w/3+rng.IntN(w/3)), min(h, r.Min.Y+h/3+rng.IntN(h/3)))
		for y := r.Min.Y; y < r.Max.Y; y++ {
			for x := r.Min.X; x < r.Max.X; x++ {
				i := img.PixOffset(x, y)
				img.Pix[i], img.Pix[i+1], img.Pix[i+2] = 250, 250, 250
			}
		}
		// Lines of "text": short dark runs, 16px line pitch.
		for y := r.Min.Y + 30; y+12 < r.Max.Y; y += 16 {
			x := r.Min.X + 8
			for x < r.Max.X-8 {
				run := 1 + rng.IntN(3)
				gap := 1 + rng.IntN(4)
				if rng.IntN(12) == 0 {
					gap += 6
				}
				for yy := y; yy < y+10; yy++ {
					if rng.IntN(3) == 0 {
						continue
					}
					for xx := x; xx < min(x+run, r.Max.X); xx++ {
						i := img.PixOffset(xx, yy)
						v := uint8(20 + rng.IntN(60))
						img.Pix[i], img.Pix[i+1], img.Pix[i+2] = v, v, v
					}
				}
				x += run + gap
			}
		}
	}
	return img
}

func TestScreenshot4KIsDownscaledToBudget(t *testing.T) {
	name := startXvfb(t, 3840, 2160)
	x := dialX(t, name)
	x.put(desktopLike(3840, 2160, 1))

	d := New(Options{Display: name})
	defer d.Close()
	const maxPayload = 512 << 10
	ctx := opctx.WithMaxReply(context.Background(), maxPayload)
	resp, err := d.Screenshot(ctx, &agentpb.DesktopScreenshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.NativeWidth != 3840 || resp.NativeHeight != 2160 {
		t.Fatalf("native %dx%d, want 3840x2160", resp.NativeWidth, resp.NativeHeight)
	}
	if resp.Width >= 3840 || resp.Height >= 2160 || resp.Width < MinSide || resp.Height < MinSide {
		t.Fatalf("encoded %dx%d, want a downscale above %d px", resp.Width, resp.Height, MinSide)
	}
	if got, want := float64(resp.Width)/float64(resp.Height), 3840.0/2160.0; math.Abs(got-want) > 0.01 {
		t.Fatalf("aspect %.4f, want %.4f", got, want)
	}
	if budget := opctx.PayloadBudget(ctx); len(resp.Png) > budget {
		t.Fatalf("png %d bytes over the budget %d", len(resp.Png), budget)
	}
	img := decodePNG(t, resp.Png)
	if img.Bounds().Dx() != int(resp.Width) || img.Bounds().Dy() != int(resp.Height) {
		t.Fatalf("png is %v, reply says %dx%d", img.Bounds(), resp.Width, resp.Height)
	}
	t.Logf("4K fitted into %d bytes: %dx%d, %d bytes", maxPayload, resp.Width, resp.Height, len(resp.Png))
}

func TestPointerInputMovesTheRealPointerAndClicks(t *testing.T) {
	name := startXvfb(t, 800, 600)
	x := dialX(t, name)
	win := x.window(image.Rect(0, 0, 800, 600))
	d := New(Options{Display: name, Consent: allow()})
	defer d.Close()
	ctx := context.Background()

	move := func(px, py int32, action agentpb.PointerAction, button agentpb.PointerButton) {
		t.Helper()
		_, err := d.Input(ctx, &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Pointer{
			Pointer: &agentpb.PointerEvent{X: px, Y: py, Action: action, Button: button}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	move(123, 45, agentpb.PointerAction_POINTER_ACTION_MOVE, 0)
	if px, py := x.pointer(); px != 123 || py != 45 {
		t.Fatalf("pointer at (%d,%d), want (123,45)", px, py)
	}
	x.drain()
	move(400, 300, agentpb.PointerAction_POINTER_ACTION_CLICK, agentpb.PointerButton_POINTER_BUTTON_RIGHT)
	move(10, 10, agentpb.PointerAction_POINTER_ACTION_DOUBLE_CLICK, agentpb.PointerButton_POINTER_BUTTON_MIDDLE)
	var presses []xproto.ButtonPressEvent
	for _, ev := range x.drain() {
		if bp, ok := ev.(xproto.ButtonPressEvent); ok && bp.Event == win {
			presses = append(presses, bp)
		}
	}
	if len(presses) != 3 || presses[0].Detail != 3 || presses[0].EventX != 400 || presses[0].EventY != 300 ||
		presses[1].Detail != 2 || presses[2].Detail != 2 || presses[2].EventX != 10 {
		t.Fatalf("button presses %+v, want right at (400,300) then middle twice at (10,10)", presses)
	}
	// Scroll down 3 clicks: buttons 5.
	if _, err := d.Input(ctx, &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Scroll{
		Scroll: &agentpb.ScrollEvent{X: 50, Y: 60, DeltaY: 3, DeltaX: -1}}}); err != nil {
		t.Fatal(err)
	}
	var wheel []byte
	for _, ev := range x.drain() {
		if bp, ok := ev.(xproto.ButtonPressEvent); ok {
			wheel = append(wheel, byte(bp.Detail))
		}
	}
	if string(wheel) != string([]byte{5, 5, 5, 6}) {
		t.Fatalf("wheel buttons %v, want [5 5 5 6]", wheel)
	}
}

func TestTypedTextAndKeysReachTheFocusedWindow(t *testing.T) {
	name := startXvfb(t, 800, 600)
	x := dialX(t, name)
	x.window(image.Rect(0, 0, 800, 600))
	d := New(Options{Display: name, Consent: allow()})
	defer d.Close()
	ctx := context.Background()
	key := func(k string, text bool, action agentpb.KeyAction) error {
		_, err := d.Input(ctx, &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Key{
			Key: &agentpb.KeyEvent{Key: k, IsText: text, Action: action}}})
		return err
	}
	x.drain()
	const text = "Hello, World! ~/a_b+C=1 é€→"
	if err := key(text, true, 0); err != nil {
		t.Fatal(err)
	}
	got, _ := x.typed(x.drain())
	if got != text {
		t.Fatalf("window received %q, want %q", got, text)
	}

	// ctrl+c: a 'c' press with Control held; shift+Tab: Tab with Shift.
	if err := key("ctrl+c", false, agentpb.KeyAction_KEY_ACTION_PRESS); err != nil {
		t.Fatal(err)
	}
	if err := key("shift+Tab", false, agentpb.KeyAction_KEY_ACTION_PRESS); err != nil {
		t.Fatal(err)
	}
	if err := key("Enter", false, 0); err != nil {
		t.Fatal(err)
	}
	if err := key("F5", false, 0); err != nil {
		t.Fatal(err)
	}
	_, presses := x.typed(x.drain())
	kb, err := loadKeyboard(x.c)
	if err != nil {
		t.Fatal(err)
	}
	sym := func(p xproto.KeyPressEvent) xproto.Keysym { return kb.syms[int(p.Detail-kb.min)*kb.per] }
	var combos []string
	for _, p := range presses {
		switch s := sym(p); {
		case s == 'c' && p.State&xproto.ModMaskControl != 0:
			combos = append(combos, "ctrl+c")
		case s == 0xff09 && p.State&xproto.ModMaskShift != 0:
			combos = append(combos, "shift+Tab")
		case s == 0xff0d && p.State == 0:
			combos = append(combos, "Enter")
		case s == 0xffc2 && p.State == 0:
			combos = append(combos, "F5")
		}
	}
	if want := []string{"ctrl+c", "shift+Tab", "Enter", "F5"}; len(combos) != 4 || combos[0] != want[0] || combos[1] != want[1] || combos[2] != want[2] || combos[3] != want[3] {
		t.Fatalf("key combos seen %v, want %v", combos, want)
	}
	// An unknown key name is refused before anything is injected.
	if err := key("ctrl+nosuchkey", false, 0); errCode(err) != agentpb.ErrorCode_ERROR_CODE_OS {
		t.Fatalf("unknown key: %v", err)
	}
	if _, presses := x.typed(x.drain()); len(presses) != 0 {
		t.Fatalf("unknown key injected %d presses", len(presses))
	}
}

func TestInputWithoutConsentIsRefusedAndHasNoEffect(t *testing.T) {
	name := startXvfb(t, 800, 600)
	x := dialX(t, name)
	var consent atomic.Bool
	d := New(Options{Display: name, Consent: consentFrom(&consent)})
	defer d.Close()
	ctx := context.Background()
	ptr := func(px, py int32) error {
		_, err := d.Input(ctx, &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Pointer{
			Pointer: &agentpb.PointerEvent{X: px, Y: py, Action: agentpb.PointerAction_POINTER_ACTION_CLICK}}})
		return err
	}
	x0, y0 := x.pointer()
	err := ptr(200, 100)
	if !errors.Is(err, agenterr.ErrConsentRequired) || errCode(err) != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED ||
		agenterr.ToProto(err).GetMessage() != ConsentMessage || agenterr.ToProto(err).GetRetryable() {
		t.Fatalf("without consent: %v (%v)", err, agenterr.ToProto(err))
	}
	if px, py := x.pointer(); px != x0 || py != y0 {
		t.Fatalf("pointer moved to (%d,%d) without consent", px, py)
	}
	// The owner grants consent: the next call goes through.
	consent.Store(true)
	if err := ptr(200, 100); err != nil {
		t.Fatal(err)
	}
	if px, py := x.pointer(); px != 200 || py != 100 {
		t.Fatalf("pointer at (%d,%d), want (200,100)", px, py)
	}
	// Revoked while running: the very next call is refused, no restart.
	consent.Store(false)
	if err := ptr(300, 300); errCode(err) != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED {
		t.Fatalf("after revoking: %v", err)
	}
	if px, py := x.pointer(); px != 200 || py != 100 {
		t.Fatalf("pointer moved to (%d,%d) after consent was revoked", px, py)
	}
	// Screenshots are a view op: not gated.
	if _, err := d.Screenshot(ctx, &agentpb.DesktopScreenshotRequest{}); err != nil {
		t.Fatalf("screenshot without consent: %v", err)
	}
}

// With --virtual-desktop the refusal does not ask for the flag the host
// already has: it says desktop_ensure starts the display, in words and in
// detail.
func TestHeadlessWithVirtualDisplayAllowedSaysEnsure(t *testing.T) {
	d := New(Options{Display: ":31998", AllowVirtualDisplay: true})
	defer d.Close()
	_, err := d.Screenshot(context.Background(), &agentpb.DesktopScreenshotRequest{})
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || pe.GetMessage() != "unsupported operation: "+NotStartedMessage ||
		pe.GetDetail()[DetailVirtualDisplay] != VirtualDisplayNotStarted || pe.GetDetail()["reason"] == "" {
		t.Fatalf("screenshot: %v", pe)
	}
	if strings.Contains(pe.GetMessage(), "enable --virtual-desktop") {
		t.Fatalf("asks for a flag that is on: %q", pe.GetMessage())
	}
}

func TestHeadlessRefusesWithTheReason(t *testing.T) {
	d := New(Options{Display: ":31999", Consent: allow()})
	defer d.Close()
	ctx := context.Background()
	_, err := d.Screenshot(ctx, &agentpb.DesktopScreenshotRequest{})
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || pe.GetMessage() != "unsupported operation: "+HeadlessMessage || pe.GetDetail()["reason"] == "" {
		t.Fatalf("screenshot: %v", pe)
	}
	_, err = d.Input(ctx, &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Key{Key: &agentpb.KeyEvent{Key: "a"}}})
	if errCode(err) != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("input: %v", err)
	}
	if ok, disp, reason := d.Capability(); ok || disp != nil || reason == "" {
		t.Fatalf("Capability = %v %v %q", ok, disp, reason)
	}
	_, err = d.Ensure(ctx, &agentpb.DesktopEnsureRequest{})
	if errCode(err) != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("ensure without AllowVirtualDisplay: %v", err)
	}
	// An empty event is an error, after the consent gate.
	_, err = d.Input(ctx, &agentpb.DesktopInputRequest{})
	if errCode(err) != agentpb.ErrorCode_ERROR_CODE_OS {
		t.Fatalf("empty event: %v", err)
	}
}

func TestEnsureStartsXvfbAndIsIdempotent(t *testing.T) {
	if _, err := exec.LookPath("Xvfb"); err != nil {
		t.Skip("Xvfb is not installed (apt-get install xvfb); skipping")
	}
	reg := &fakeRegistrar{}
	var exported atomic.Value
	d := New(Options{Display: ":31998", AllowVirtualDisplay: true, Registrar: reg, Consent: allow(),
		ExportDisplay: func(n string) { exported.Store(n) }})
	ctx := context.Background()
	resp, err := d.Ensure(ctx, &agentpb.DesktopEnsureRequest{Width: 800, Height: 600})
	if err != nil {
		t.Fatal(err)
	}
	disp := resp.GetDisplay()
	if !disp.GetVirtual() || disp.GetWidth() != 800 || disp.GetHeight() != 600 || exported.Load() != disp.GetId() {
		t.Fatalf("display %v, exported %v", disp, exported.Load())
	}
	n, _ := displayNumber(disp.GetId())
	if n < 99 {
		t.Fatalf("virtual display %s below :99", disp.GetId())
	}
	if resp.GetChannel().GetChannelId() != "ch-test-1" || resp.GetChannel().GetKind() != agentpb.StreamKind_STREAM_KIND_DESKTOP {
		t.Fatalf("channel %v", resp.GetChannel())
	}
	// The first frame was out before Ensure returned; it is the virtual screen.
	ch := reg.opens[0]
	if ch.count() < 1 {
		t.Fatal("no frame before Ensure returned")
	}
	if img := decodePNG(t, ch.frame(0)); img.Bounds().Dx() != 800 || img.Bounds().Dy() != 600 {
		t.Fatalf("frame %v", img.Bounds())
	}
	// Repeat: the same live channel, no new registration, no new Xvfb.
	again, err := d.Ensure(ctx, &agentpb.DesktopEnsureRequest{Width: 1024, Height: 768})
	if err != nil {
		t.Fatal(err)
	}
	if again.GetChannel().GetChannelId() != "ch-test-1" || again.GetDisplay().GetId() != disp.GetId() || len(reg.opens) != 1 {
		t.Fatalf("repeat Ensure: %v (opens %d)", again, len(reg.opens))
	}
	// Screenshots and input now target the virtual display.
	shot, err := d.Screenshot(ctx, &agentpb.DesktopScreenshotRequest{})
	if err != nil || shot.Width != 800 {
		t.Fatalf("screenshot on the virtual display: %v %v", shot.GetWidth(), err)
	}
	// When the channel ends, the next Ensure registers a new one.
	_ = ch.Close(0, "")
	<-d.live.done
	third, err := d.Ensure(ctx, &agentpb.DesktopEnsureRequest{})
	if err != nil || third.GetChannel().GetChannelId() != "ch-test-2" {
		t.Fatalf("after the channel ended: %v %v", third, err)
	}
	// Close stops Xvfb and frees the display.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if socketLive(n) {
		t.Fatalf("Xvfb %s still accepts connections after Close", disp.GetId())
	}
	if _, err := os.Stat(xLockPath(n)); err == nil {
		t.Fatalf("lock of %s left behind", disp.GetId())
	}
}

func TestEnsureWithoutRegistrarIsUnsupported(t *testing.T) {
	name := startXvfb(t, 320, 240)
	d := New(Options{Display: name})
	defer d.Close()
	_, err := d.Ensure(context.Background(), &agentpb.DesktopEnsureRequest{})
	if errCode(err) != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("no registrar: %v", err)
	}
}

func TestPumpSendsOnlyChangedFramesAndGatesViewerInput(t *testing.T) {
	name := startXvfb(t, 640, 480)
	x := dialX(t, name)
	x.fill(image.Rect(0, 0, 640, 480), color.RGBA{255, 255, 255, 255})
	// Consent is refused on its first reading and granted afterwards.
	var reads atomic.Int32
	d := New(Options{Display: name, Consent: func() bool { return reads.Add(1) > 1 }})
	defer d.Close()
	ch := newFakeChannel("ch-pump")
	tick := make(chan time.Time)
	ticked := make(chan bool)
	live, err := d.startPump(ch, tick, func(sent bool) { ticked <- sent })
	if err != nil {
		t.Fatal(err)
	}
	defer live.stop()
	if ch.count() != 1 {
		t.Fatalf("%d frames after ready, want 1", ch.count())
	}
	// Unchanged screen: ticks capture but send nothing.
	for i := 0; i < 5; i++ {
		tick <- time.Now()
		if sent := <-ticked; sent {
			t.Fatalf("tick %d sent a frame for an unchanged screen", i)
		}
	}
	if ch.count() != 1 {
		t.Fatalf("%d frames for an unchanged screen, want 1", ch.count())
	}
	// A change: the next tick sends exactly one new frame showing it.
	x.fill(image.Rect(100, 100, 200, 150), color.RGBA{255, 0, 0, 255})
	tick <- time.Now()
	if sent := <-ticked; !sent {
		t.Fatal("changed screen sent no frame")
	}
	if ch.count() != 2 {
		t.Fatalf("%d frames, want 2", ch.count())
	}
	if got := rgbaAt(decodePNG(t, ch.frame(1)), 150, 120); got != (color.RGBA{255, 0, 0, 255}) {
		t.Fatalf("new frame pixel %v, want red", got)
	}
	tick <- time.Now()
	if sent := <-ticked; sent {
		t.Fatal("unchanged again, yet a frame was sent")
	}

	// Viewer input: dropped without consent, injected with it.
	x.window(image.Rect(0, 0, 640, 480))
	x.drain()
	ptr := func(px, py int32) *agentpb.DesktopInput {
		return &agentpb.DesktopInput{Event: &agentpb.DesktopInput_Pointer{Pointer: &agentpb.PointerEvent{X: px, Y: py, Action: agentpb.PointerAction_POINTER_ACTION_MOVE}}}
	}
	ch.input <- ptr(11, 12)
	deadline := time.Now().Add(5 * time.Second)
	for reads.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	ch.input <- ptr(21, 22)
	for time.Now().Before(deadline) {
		if px, py := x.pointer(); px == 21 && py == 22 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if px, py := x.pointer(); px != 21 || py != 22 {
		t.Fatalf("consented viewer input not injected: pointer at (%d,%d)", px, py)
	}
	for _, ev := range x.drain() {
		if m, ok := ev.(xproto.MotionNotifyEvent); ok && m.EventX == 11 && m.EventY == 12 {
			t.Fatal("viewer input without consent reached the display")
		}
	}
}

func TestReclaimStaleLockAndSocket(t *testing.T) {
	dir := t.TempDir()
	oldS, oldL := xSocketDir, xLockDir
	xSocketDir, xLockDir = filepath.Join(dir, ".X11-unix"), dir
	t.Cleanup(func() { xSocketDir, xLockDir = oldS, oldL })
	if err := os.MkdirAll(xSocketDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Dead owner: both removed.
	_ = os.WriteFile(xLockPath(991), []byte("      999999\n"), 0o644)
	_ = os.WriteFile(xSocketPath(991), nil, 0o644)
	if !reclaimStale(991) {
		t.Fatal("stale display not reclaimed")
	}
	for _, p := range []string{xLockPath(991), xSocketPath(991)} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s left behind", p)
		}
	}
	// A live owner (this process) keeps its lock: a server still starting.
	_ = os.WriteFile(xLockPath(992), []byte(" "+strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if reclaimStale(992) {
		t.Fatal("a live server's lock was reclaimed")
	}
	// Nothing there: free.
	if !reclaimStale(993) {
		t.Fatal("an unused display is not free")
	}
}

func TestMissingXvfbIsUnsupported(t *testing.T) {
	d := New(Options{Display: ":31997", AllowVirtualDisplay: true, XvfbPath: "/nonexistent/Xvfb", Registrar: &fakeRegistrar{}})
	defer d.Close()
	_, err := d.Ensure(context.Background(), &agentpb.DesktopEnsureRequest{})
	pe := agenterr.ToProto(err)
	if pe.GetCode() != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED || pe.GetMessage() != "unsupported operation: Xvfb is not installed; install it to use --virtual-desktop" {
		t.Fatalf("missing Xvfb: %v", pe)
	}
}

func TestVirtualDisplayHeuristic(t *testing.T) {
	for name, want := range map[string]bool{":99": true, ":100.0": true, ":0": false, ":1": false, "host:120": true, "": false, "x": false} {
		if got := isVirtualDisplay(name); got != want {
			t.Errorf("isVirtualDisplay(%q) = %v", name, got)
		}
	}
}

func TestZpixmapConversion(t *testing.T) {
	setup := &xproto.SetupInfo{ImageByteOrder: xproto.ImageOrderLSBFirst,
		PixmapFormats: []xproto.Format{{Depth: 24, BitsPerPixel: 32, ScanlinePad: 32}}}
	img, err := zpixmapToRGBA(setup, 24, []byte{1, 2, 3, 0, 4, 5, 6, 0}, 2, 1)
	if err != nil || !bytes.Equal(img.Pix, []byte{3, 2, 1, 255, 6, 5, 4, 255}) {
		t.Fatalf("BGRX swap: %v %v", img.Pix, err)
	}
	// 24 bpp with a 32-bit scanline pad: 1x2 has 3 pad bytes per row.
	setup24 := &xproto.SetupInfo{PixmapFormats: []xproto.Format{{Depth: 24, BitsPerPixel: 24, ScanlinePad: 32}}}
	img, err = zpixmapToRGBA(setup24, 24, []byte{1, 2, 3, 9, 4, 5, 6, 9}, 1, 2)
	if err != nil || !bytes.Equal(img.Pix, []byte{3, 2, 1, 255, 6, 5, 4, 255}) {
		t.Fatalf("24bpp stride: %v %v", img.Pix, err)
	}
	if _, err := zpixmapToRGBA(setup, 24, []byte{1, 2}, 2, 1); err == nil {
		t.Fatal("short data accepted")
	}
}
