// Package logging builds the binaries' slog loggers.
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Env vars read when the flags are not given.
const (
	EnvLevel  = "OPENGENI_LOG_LEVEL"
	EnvFormat = "OPENGENI_LOG_FORMAT"
)

// FormatUsage is the --log-format flag's help.
const FormatUsage = "text or json (env " + EnvFormat + ")"

// New returns a logger at the level named by level ("debug", "info",
// "warn", "error"; empty means $OPENGENI_LOG_LEVEL, then info), in the
// format $OPENGENI_LOG_FORMAT names (text by default).
func New(w io.Writer, level string) *slog.Logger {
	l, err := NewFormat(w, level, "")
	if err != nil { // a bad $OPENGENI_LOG_FORMAT: text, as before it existed
		l, _ = NewFormat(w, level, "text")
	}
	return l
}

// NewFormat is New with a format: "text" or "json" (one JSON object per
// line); empty means $OPENGENI_LOG_FORMAT, then text. Any other format is
// an error.
func NewFormat(w io.Writer, level, format string) (*slog.Logger, error) {
	if level == "" {
		level = os.Getenv(EnvLevel)
	}
	if format == "" {
		format = os.Getenv(EnvFormat)
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
	opts := &slog.HandlerOptions{Level: l}
	switch strings.ToLower(format) {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q (want text or json)", format)
}
