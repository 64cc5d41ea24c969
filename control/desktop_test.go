package control

import (
	"testing"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func TestScaleToNative(t *testing.T) {
	half := &Screenshot{Width: 1920, Height: 1080, NativeWidth: 3840, NativeHeight: 2160}
	same := &Screenshot{Width: 1280, Height: 800, NativeWidth: 1280, NativeHeight: 800}
	legacy := &Screenshot{Width: 1280, Height: 800} // an agent that sends no native size
	odd := &Screenshot{Width: 1222, Height: 687, NativeWidth: 3840, NativeHeight: 2160}
	up := &Screenshot{Width: 200, Height: 100, NativeWidth: 100, NativeHeight: 50}
	for _, c := range []struct {
		name         string
		shot         *Screenshot
		x, y, nx, ny int
	}{
		{"origin", half, 0, 0, 1, 1},
		{"center", half, 960, 540, 1921, 1081},
		{"last pixel maps to last", half, 1919, 1079, 3839, 2159},
		{"clamp beyond", half, 5000, 5000, 3839, 2159},
		{"clamp negative", half, -10, -3, 1, 1},
		{"identity", same, 0, 0, 0, 0},
		{"identity mid", same, 640, 399, 640, 399},
		{"identity last", same, 1279, 799, 1279, 799},
		{"native 0 means encoded", legacy, 1000, 700, 1000, 700},
		{"non-integer ratio origin", odd, 0, 0, 1, 1},
		{"non-integer ratio mid", odd, 611, 343, 1921, 1080},
		{"non-integer ratio last", odd, 1221, 686, 3838, 2158},
		{"upscaled shot", up, 199, 99, 99, 49},
		{"upscaled shot first", up, 1, 1, 0, 0},
		{"nil shot", nil, 5, -1, 5, 0},
		{"empty shot", &Screenshot{}, 7, 8, 7, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			nx, ny := ScaleToNative(c.x, c.y, c.shot)
			if nx != c.nx || ny != c.ny {
				t.Fatalf("ScaleToNative(%d,%d) = (%d,%d), want (%d,%d)", c.x, c.y, nx, ny, c.nx, c.ny)
			}
		})
	}
}

func TestScaleFromNativeRoundTrips(t *testing.T) {
	for _, shot := range []*Screenshot{
		{Width: 1920, Height: 1080, NativeWidth: 3840, NativeHeight: 2160},
		{Width: 1222, Height: 687, NativeWidth: 3840, NativeHeight: 2160},
		{Width: 1280, Height: 800},
	} {
		// Every encoded pixel survives encoded → native → encoded.
		for x := 0; x < int(shot.Width); x += 7 {
			y := x % int(shot.Height)
			nx, ny := ScaleToNative(x, y, shot)
			bx, by := ScaleFromNative(nx, ny, shot)
			if bx != x || by != y {
				t.Fatalf("%+v: (%d,%d) → (%d,%d) → (%d,%d)", shot, x, y, nx, ny, bx, by)
			}
		}
	}
	if x, y := ScaleFromNative(3839, 2159, &Screenshot{Width: 1920, Height: 1080, NativeWidth: 3840, NativeHeight: 2160}); x != 1919 || y != 1079 {
		t.Fatalf("last native pixel → (%d,%d)", x, y)
	}
}

func TestScaleAndInputBuilders(t *testing.T) {
	shot := &Screenshot{Width: 1920, Height: 1080, NativeWidth: 3840, NativeHeight: 2160}
	if sx, sy := shot.Scale(); sx != 0.5 || sy != 0.5 {
		t.Fatalf("Scale = %v,%v", sx, sy)
	}
	if sx, sy := (&Screenshot{Width: 10, Height: 10}).Scale(); sx != 1 || sy != 1 {
		t.Fatalf("legacy Scale = %v,%v", sx, sy)
	}
	in := PointerInput(shot, 100, 50, agentpb.PointerAction_POINTER_ACTION_CLICK, agentpb.PointerButton_POINTER_BUTTON_RIGHT)
	p := in.GetPointer()
	if p.GetX() != 201 || p.GetY() != 101 || p.GetAction() != agentpb.PointerAction_POINTER_ACTION_CLICK || p.GetButton() != agentpb.PointerButton_POINTER_BUTTON_RIGHT {
		t.Fatalf("PointerInput = %v", p)
	}
	s := ScrollInput(shot, 1919, 0, -2, 3).GetScroll()
	if s.GetX() != 3839 || s.GetY() != 1 || s.GetDeltaX() != -2 || s.GetDeltaY() != 3 {
		t.Fatalf("ScrollInput = %v", s)
	}
}
