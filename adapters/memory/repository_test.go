package memory_test

import (
	"testing"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/memory"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/repotest"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// TestRepositoryContract runs the repository contract, the one the
// PostgreSQL adapter runs too.
func TestRepositoryContract(t *testing.T) {
	repotest.Run(t, func(_ *testing.T, now func() time.Time) ports.ProjectRepository {
		return memory.NewRepository(now)
	})
}
