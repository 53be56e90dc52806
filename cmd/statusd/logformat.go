package main

import (
	"fmt"
	"io"
	"log/slog"
)

// newLogHandler returns the slog handler of --log-format: "text"
// (key=value, the default) or "json" (one object per line, for log
// collectors). Both carry the same fields: time, level, msg and the
// attributes of the call.
func newLogHandler(format string, w io.Writer, level slog.Level) (slog.Handler, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, got %q", format)
}
