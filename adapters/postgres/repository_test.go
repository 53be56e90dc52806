package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/repotest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// TestRepositoryContract runs the contract the memory repository runs, on
// a schema of its own per subtest.
func TestRepositoryContract(t *testing.T) {
	repotest.Run(t, func(t *testing.T, now func() time.Time) ports.ProjectRepository {
		return postgres.NewRepository(pgtest.Pool(t, pgtest.Schema(t)), now)
	})
}

// The migrations are applied once, whoever starts first; a second Migrate
// (a restart, another instance) changes nothing and keeps the data.
func TestMigrateIsIdempotent(t *testing.T) {
	ctx := context.Background()
	url := pgtest.Schema(t) // migrated once
	pool := pgtest.Pool(t, url)
	repo := postgres.NewRepository(pool, nil)
	_, err := repo.Create(ctx, domain.Project{ID: "kept", Name: "kept"})
	require.NoError(t, err)

	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- postgres.Migrate(ctx, pool) }()
	}
	for range 3 {
		require.NoError(t, <-errs)
	}
	p, err := repo.Get(ctx, "kept")
	require.NoError(t, err)
	assert.Equal(t, "kept", p.Name)
	var n int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM schema_migrations`).Scan(&n))
	assert.Equal(t, 2, n)
}

// The columns are the project's fields; the database itself refuses an id
// that could forge a topic, whoever writes it.
func TestSchemaChecksIDs(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.Schema(t))
	_, err := pool.Exec(ctx, `INSERT INTO projects (id, status, inserted_at, updated_at) VALUES ('a:*', 'ready', now(), now())`)
	require.Error(t, err)
	list, err := postgres.NewRepository(pool, nil).List(ctx, 0)
	require.NoError(t, err)
	assert.Empty(t, list)
}
