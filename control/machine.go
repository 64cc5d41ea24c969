package control

import (
	"context"
	"math/rand/v2"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// maxNonce bounds ping nonces to [0, 2^53), integers every JSON consumer can
// represent exactly.
const maxNonce = 1 << 53

// Ping reports whether the machine answers: true iff the round trip succeeded
// and the result is a ping. It never fails; the nonce echo is not checked.
func (s *Session) Ping(ctx context.Context) bool { return s.Probe(ctx) == nil }

// Probe is Ping that says why the machine did not answer: a [*Error]
// (AGENT_OFFLINE with its transport Cause, TIMEOUT, ...) or the caller's
// cancellation.
func (s *Session) Probe(ctx context.Context) error {
	return invokeAck[*agentpb.ControlResponse_Ping](ctx, s, "ping", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_Ping{Ping: &agentpb.PingRequest{Nonce: rand.Uint64N(maxNonce)}}
	})
}

// Metrics samples the machine's load, memory, disk and GPUs.
func (s *Session) Metrics(ctx context.Context) (*agentpb.MetricsSample, error) {
	return invokeCase[*agentpb.ControlResponse_Metrics](ctx, s, "metrics", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_Metrics{Metrics: &agentpb.MetricsRequest{}}
	}, func(resp *agentpb.ControlResponse) *agentpb.MetricsSample { return orEmpty(resp.GetMetrics()) })
}

// Screenshot is one PNG frame of the machine's display.
type Screenshot struct {
	PNG           []byte
	Width, Height uint32 // of the encoded image
	// NativeWidth/NativeHeight are the display's own size (input
	// coordinates); an agent that sends 0 means "same as encoded".
	NativeWidth, NativeHeight uint32
}

// Screenshot captures the display.
func (s *Session) Screenshot(ctx context.Context) (*Screenshot, error) {
	return invokeCase[*agentpb.ControlResponse_DesktopScreenshot](ctx, s, "screenshot", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_DesktopScreenshot{DesktopScreenshot: &agentpb.DesktopScreenshotRequest{}}
	}, func(resp *agentpb.ControlResponse) *Screenshot {
		r := resp.GetDesktopScreenshot()
		sc := &Screenshot{PNG: r.GetPng(), Width: r.GetWidth(), Height: r.GetHeight(),
			NativeWidth: r.GetNativeWidth(), NativeHeight: r.GetNativeHeight()}
		if sc.NativeWidth == 0 {
			sc.NativeWidth = sc.Width
		}
		if sc.NativeHeight == 0 {
			sc.NativeHeight = sc.Height
		}
		return sc
	})
}

// DesktopInput sends one pointer, key or scroll event. Without screen-control
// consent the agent answers CONSENT_REQUIRED (Reason consent_required).
func (s *Session) DesktopInput(ctx context.Context, in *agentpb.DesktopInputRequest) error {
	return invokeAck[*agentpb.ControlResponse_DesktopInput](ctx, s, "desktopInput", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_DesktopInput{DesktopInput: in}
	})
}

// DesktopEnsure makes sure the machine has a desktop streaming on the relay
// (starting a virtual display at width×height when it has none and allows
// it; 0 means the agent's default) and returns its channel and display.
// Repeat calls return the same live channel.
func (s *Session) DesktopEnsure(ctx context.Context, width, height uint32) (*agentpb.DesktopEnsureResponse, error) {
	return invokeCase[*agentpb.ControlResponse_DesktopEnsure](ctx, s, "desktopEnsure", func(r *agentpb.ControlRequest) {
		r.Op = &agentpb.ControlRequest_DesktopEnsure{DesktopEnsure: &agentpb.DesktopEnsureRequest{Width: width, Height: height}}
	}, (*agentpb.ControlResponse).GetDesktopEnsure)
}
