//go:build darwin || windows

package desktop

import (
	"context"
	"fmt"
	"image"
	"runtime"

	"github.com/kbinani/screenshot"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

// openScreen returns the main display through kbinani/screenshot. The
// display name is an X11 notion and is ignored here.
func openScreen(string) screen { return kbScreen{} }

// kbScreen is the primary display of a macOS or Windows session.
type kbScreen struct{}

func (kbScreen) probe() (*agentpb.Display, error) {
	if reason := sessionProblem(); reason != "" {
		return nil, noDisplayf(reason)
	}
	if screenshot.NumActiveDisplays() == 0 {
		if runtime.GOOS == "darwin" {
			return nil, noDisplayf("no display: screen capture on macOS needs a cgo build and the Screen Recording permission")
		}
		return nil, noDisplayf("no active display in this session")
	}
	b := screenshot.GetDisplayBounds(0)
	return &agentpb.Display{Id: "main", Width: uint32(b.Dx()), Height: uint32(b.Dy())}, nil
}

func (s kbScreen) capture(ctx context.Context) (*image.RGBA, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, err := s.probe(); err != nil {
		return nil, err
	}
	img, err := screenshot.CaptureDisplay(0)
	if err != nil {
		return nil, fmt.Errorf("capture main display: %w", err)
	}
	return img, nil
}

func (kbScreen) close() {}
