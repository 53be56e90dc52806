package postgres_test

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
)

// Every test and the Example here need PostgreSQL: without one the package
// is skipped with one line (it fails under CI=true).
func TestMain(m *testing.M) {
	if err := pgtest.Available(); err != nil && os.Getenv("CI") != "true" {
		fmt.Println("adapters/postgres:", pgtest.SkipMessage(err))
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}
