package httpapi_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any of them leaves a goroutine
// behind: every stream, reader and server a test starts must be stopped.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
