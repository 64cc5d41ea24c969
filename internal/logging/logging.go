// Package logging builds the binaries' slog loggers.
package logging

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// New returns a text logger at the level named by level ("debug", "info",
// "warn", "error"; empty means $OPENGENI_LOG_LEVEL, then info).
func New(w io.Writer, level string) *slog.Logger {
	if level == "" {
		level = os.Getenv("OPENGENI_LOG_LEVEL")
	}
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn", "warning":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}
