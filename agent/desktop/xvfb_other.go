//go:build !linux

package desktop

import (
	"context"
	"log/slog"

	"github.com/opengeni/opengeni-agent/internal/agenterr"
)

// virtualDisplay exists only on Linux (Xvfb).
type virtualDisplay struct{ name string }

func (*virtualDisplay) stop() {}

func startVirtualDisplay(context.Context, string, int, int, *slog.Logger) (*virtualDisplay, error) {
	return nil, agenterr.Unsupported("virtual displays need Xvfb, which exists on Linux only")
}
