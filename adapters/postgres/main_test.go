package postgres_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
)

// Every test and the Example here need PostgreSQL: without one the package
// is skipped with one line on stderr (under CI=true it fails).
func TestMain(m *testing.M) {
	if err := pgtest.Available(); err != nil {
		fmt.Fprintln(os.Stderr, "!!!!!!!! adapters/postgres:", pgtest.SkipMessage(err))
		if os.Getenv("CI") == "true" {
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
