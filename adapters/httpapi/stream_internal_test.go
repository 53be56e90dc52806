package httpapi

import (
	"bytes"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
)

// goroutineHeader is the first line of the calling goroutine's trace,
// "goroutine N [running]:".
func goroutineHeader() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	line, _, _ := bytes.Cut(buf, []byte("\n"))
	return string(line)
}

// A stream's setup runs on a goroutine that exits (so that its deep
// frames never grow the stack of the goroutine that parks for the
// stream's life), waited for, with its panics raised on the caller's
// goroutine, where net/http recovers them.
func TestOnFreshStackRunsOnAnotherGoroutineAndRaisesItsPanic(t *testing.T) {
	caller := goroutineHeader()
	var inside string
	ran := false
	onFreshStack(func() {
		inside = goroutineHeader()
		ran = true
	})
	assert.True(t, ran, "onFreshStack waits for f")
	assert.NotEqual(t, caller, inside, "f runs on a goroutine of its own")

	assert.PanicsWithValue(t, "boom", func() {
		onFreshStack(func() { panic("boom") })
	})
}
