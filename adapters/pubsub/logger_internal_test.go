package pubsub

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/assert"
)

// Watermill's logs reach the service's logger at the mapped levels, and a
// call below the logger's level costs nothing (gochannel and the router
// trace every message).
func TestWatermillLoggerGatesLevelsBeforeConvertingFields(t *testing.T) {
	var out bytes.Buffer
	level := new(slog.LevelVar)
	wm := watermillLogger(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level})))
	fields := watermill.LogFields{"message_uuid": "u-1", "topic": "t"}

	level.Set(slog.LevelInfo)
	wm.Trace("traced", fields)
	wm.Debug("debugged", fields)
	wm.Info("router started", fields) // Info is mapped to Debug
	wm.With(fields).Trace("traced with", nil)
	wm.Error("failed", assert.AnError, fields)
	assert.NotContains(t, out.String(), "traced")
	assert.NotContains(t, out.String(), "debugged")
	assert.NotContains(t, out.String(), "router started")
	assert.Contains(t, out.String(), "level=ERROR msg=failed")
	allocs := testing.AllocsPerRun(100, func() {
		wm.Trace("traced", fields)
		wm.Debug("debugged", fields)
	})
	assert.Zero(t, allocs)

	out.Reset()
	level.Set(watermill.LevelTrace)
	wm.Trace("traced", fields)
	wm.Info("router started", fields)
	wm.With(watermill.LogFields{"handler": "h"}).Trace("traced with", nil)
	assert.Contains(t, out.String(), "msg=traced message_uuid=u-1")
	assert.Contains(t, out.String(), "level=DEBUG msg=\"router started\"")
	assert.Contains(t, out.String(), "msg=\"traced with\" handler=h")
}
