package e2e

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"os/exec"
	"sync/atomic"
	"testing"

	"github.com/opengeni/opengeni-agent/agent"
	"github.com/opengeni/opengeni-agent/control"
	"github.com/opengeni/opengeni-agent/internal/xvfbtest"
	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// startXvfb runs a real X server for the test, or skips (saying so) when
// Xvfb is not installed.
func startXvfb(t *testing.T, w, h int) string {
	t.Helper()
	display, stop, err := xvfbtest.Start(340, w, h)
	if errors.Is(err, exec.ErrNotFound) {
		t.Skip("SKIP (not a pass): Xvfb is not installed (apt-get install xvfb)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return display
}

func pointer(t *testing.T, display string) (int16, int16) {
	t.Helper()
	x, y, err := xvfbtest.Pointer(display)
	if err != nil {
		t.Fatal(err)
	}
	return int16(x), int16(y)
}

func TestDesktopThroughTheControlSession(t *testing.T) {
	display := startXvfb(t, 800, 600)
	var consent atomic.Bool
	e := newEnv(t, nil, func(o *agent.Options) {
		o.Display = display
		o.Consent = func() agent.Consent { return agent.Consent{WholeMachine: true, ScreenControl: consent.Load()} }
	})
	s := e.session(t, nil)
	ctx := ctxT(t)

	shot, err := s.Screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot.PNG))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 800 || b.Dy() != 600 || shot.Width != 800 || shot.NativeWidth != 800 || shot.NativeHeight != 600 {
		t.Fatalf("screenshot %v, reported %dx%d native %dx%d", b, shot.Width, shot.Height, shot.NativeWidth, shot.NativeHeight)
	}

	move := func(x, y int) error {
		return s.DesktopInput(ctx, control.PointerInput(shot, x, y, agentpb.PointerAction_POINTER_ACTION_MOVE, agentpb.PointerButton_POINTER_BUTTON_LEFT))
	}
	x0, y0 := pointer(t, display)
	err = move(123, 321)
	var ce *control.Error
	if !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED || ce.Reason != control.ReasonConsentRequired {
		t.Fatalf("input without consent: %v", err)
	}
	if x, y := pointer(t, display); x != x0 || y != y0 {
		t.Fatalf("the pointer moved without consent: (%d,%d) -> (%d,%d)", x0, y0, x, y)
	}

	consent.Store(true) // the owner grants it; read live, no restart
	if err := move(123, 321); err != nil {
		t.Fatal(err)
	}
	if x, y := pointer(t, display); x != 123 || y != 321 {
		t.Fatalf("pointer at (%d,%d), want (123,321)", x, y)
	}

	consent.Store(false) // and revokes it
	if err := move(5, 5); !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_CONSENT_REQUIRED {
		t.Fatalf("input after revoking: %v", err)
	}
	if x, y := pointer(t, display); x != 123 || y != 321 {
		t.Fatalf("the pointer moved after consent was revoked: (%d,%d)", x, y)
	}
}

func TestHeadlessDesktopIsUnsupported(t *testing.T) {
	e := newEnv(t, nil, func(o *agent.Options) { o.Display = ":999" }) // no such display
	_, err := e.session(t, nil).Screenshot(ctxT(t))
	var ce *control.Error
	if !errors.As(err, &ce) || ce.Code != agentpb.ErrorCode_ERROR_CODE_UNSUPPORTED {
		t.Fatalf("screenshot on a headless machine: %v", err)
	}
}

// A machine without a display: desktop_ensure starts Xvfb and the desktop
// channel streams PNG frames to a viewer through a real relay.
func TestDesktopEnsureStreamsThroughTheRelay(t *testing.T) {
	if _, err := exec.LookPath("Xvfb"); err != nil {
		t.Skip("SKIP (not a pass): Xvfb is not installed (apt-get install xvfb)")
	}
	r := startTestRelay(t)
	e := newEnv(t, nil, func(o *agent.Options) {
		withRelay(t, r)(o)
		o.Display = ":977" // no such display: the machine is headless
		o.VirtualDesktop = true
	})
	s := e.session(t, func(c *control.SessionConfig) { c.Relay = control.ParseRelayURL(r.URL()) })
	ctx := ctxT(t)

	first, err := s.DesktopEnsure(ctx, 640, 480)
	if err != nil {
		t.Fatal(err)
	}
	if d := first.GetDisplay(); !d.GetVirtual() || d.GetWidth() != 640 || d.GetHeight() != 480 {
		t.Fatalf("display = %v", d)
	}
	again, err := s.DesktopEnsure(ctx, 640, 480)
	if err != nil || again.GetChannel().GetChannelId() != first.GetChannel().GetChannelId() {
		t.Fatalf("repeat ensure: %v, %v (want channel %s)", again.GetChannel(), err, first.GetChannel().GetChannelId())
	}
	ep, err := s.ResolveExposedPort(ctx, control.DesktopStreamPort)
	if err != nil || ep.Protocol != "vnc" {
		t.Fatalf("ResolveExposedPort(6080) = %+v, %v", ep, err)
	}
	url, err := control.BuildStreamURL(*ep)
	if err != nil {
		t.Fatal(err)
	}
	claims := control.StreamTokenClaims{WorkspaceID: testWS, Mode: control.StreamModeView, Port: control.DesktopStreamPort}
	v, err := control.DialStream(ctx, control.ViewerOptions{
		URL: url, Channel: first.GetChannel(),
		Token: func(context.Context) (string, error) {
			tok, _, err := control.MintViewerToken([]byte(relayStreamSecret), claims, 0)
			return tok, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	select {
	case frame := <-v.Output():
		img, err := png.Decode(bytes.NewReader(frame))
		if err != nil {
			t.Fatalf("desktop frame is not a PNG: %v", err)
		}
		if b := img.Bounds(); b.Dx() != 640 || b.Dy() != 480 {
			t.Fatalf("frame %v, want 640x480", b)
		}
	case <-ctx.Done():
		t.Fatal("no desktop frame reached the viewer")
	}
}
