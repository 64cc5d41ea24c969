package control

import agentpb "github.com/opengeni/opengeni-agent/proto/agent"

// Coordinate scaling between a screenshot and the display. A screenshot may
// be downscaled to fit the reply budget: Width×Height is the encoded image
// a model looks at, NativeWidth×NativeHeight the display, whose pixels
// desktop input addresses. A pixel maps through its center, so the first
// and last pixels map onto the first and last pixels of the other space,
// and a 1:1 screenshot maps every pixel onto itself. Results are clamped
// into the target space. A shot with an empty encoded or native size maps
// coordinates unchanged (clamped at 0).

// ScaleToNative maps pixel (x, y) of the encoded screenshot to display
// pixels, for desktop input.
func ScaleToNative(x, y int, shot *Screenshot) (int, int) {
	if shot == nil {
		return max(0, x), max(0, y)
	}
	w, h, nw, nh := dims(shot)
	return scaleAxis(x, w, nw), scaleAxis(y, h, nh)
}

// ScaleFromNative maps display pixel (x, y) to the encoded screenshot,
// e.g. to mark where the pointer is on the image a model sees.
func ScaleFromNative(x, y int, shot *Screenshot) (int, int) {
	if shot == nil {
		return max(0, x), max(0, y)
	}
	w, h, nw, nh := dims(shot)
	return scaleAxis(x, nw, w), scaleAxis(y, nh, h)
}

// Scale is the encoded/native ratio per axis (1 for a full-size shot).
func (s *Screenshot) Scale() (sx, sy float64) {
	w, h, nw, nh := dims(s)
	if w == 0 || h == 0 || nw == 0 || nh == 0 {
		return 1, 1
	}
	return float64(w) / float64(nw), float64(h) / float64(nh)
}

// PointerInput builds a pointer event at encoded-screenshot pixel (x, y),
// scaled to display pixels.
func PointerInput(shot *Screenshot, x, y int, action agentpb.PointerAction, button agentpb.PointerButton) *agentpb.DesktopInputRequest {
	nx, ny := ScaleToNative(x, y, shot)
	return &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Pointer{Pointer: &agentpb.PointerEvent{
		X: int32(nx), Y: int32(ny), Action: action, Button: button}}}
}

// ScrollInput builds a scroll event at encoded-screenshot pixel (x, y);
// the deltas are wheel clicks and are not scaled.
func ScrollInput(shot *Screenshot, x, y, dx, dy int) *agentpb.DesktopInputRequest {
	nx, ny := ScaleToNative(x, y, shot)
	return &agentpb.DesktopInputRequest{Event: &agentpb.DesktopInputRequest_Scroll{Scroll: &agentpb.ScrollEvent{
		X: int32(nx), Y: int32(ny), DeltaX: int32(dx), DeltaY: int32(dy)}}}
}

// dims applies the back-compat rule: a native size of 0 means the encoded size.
func dims(s *Screenshot) (w, h, nw, nh int) {
	w, h, nw, nh = int(s.Width), int(s.Height), int(s.NativeWidth), int(s.NativeHeight)
	if nw == 0 {
		nw = w
	}
	if nh == 0 {
		nh = h
	}
	return w, h, nw, nh
}

// scaleAxis maps coordinate v of a from-pixel axis onto a to-pixel axis
// through the pixel's center: floor((v+½)·to/from), clamped to [0, to-1].
func scaleAxis(v, from, to int) int {
	if from <= 0 || to <= 0 {
		return max(0, v)
	}
	v = max(0, min(from-1, v))
	out := int((int64(2*v+1) * int64(to)) / int64(2*from))
	return max(0, min(to-1, out))
}
