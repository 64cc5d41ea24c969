//go:build !linux && !darwin && !windows

package desktop

import (
	"context"
	"image"
	"runtime"

	agentpb "github.com/opengeni/opengeni-agent/proto/agent"
)

func openScreen(string) screen { return noScreen{} }

// noScreen is a platform without a desktop backend.
type noScreen struct{}

func (noScreen) probe() (*agentpb.Display, error) {
	return nil, noDisplayf("no desktop backend for " + runtime.GOOS)
}

func (s noScreen) capture(context.Context) (*image.RGBA, error) {
	_, err := s.probe()
	return nil, err
}

func (noScreen) close() {}
