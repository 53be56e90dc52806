// Package repotest is the contract of ports.ProjectRepository, written once
// and run against every implementation (the memory and the PostgreSQL
// adapters), as pubsubtest is for the pub/sub.
package repotest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// T0 is the first time Clock returns.
var T0 = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// Clock returns T0, then a minute later at every call.
func Clock() func() time.Time {
	var mu sync.Mutex
	next := T0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := next
		next = next.Add(time.Minute)
		return now
	}
}

// NewRepository returns an empty repository that stamps records with now
// (nil: the implementation's default clock).
type NewRepository func(t *testing.T, now func() time.Time) ports.ProjectRepository

func newProject(id string) domain.Project {
	return domain.Project{
		ID: id, Name: "my_app",
		CodeRepo: "https://github.com/user/my_app", DocsRepo: "https://github.com/user/my_app_docs",
	}
}

// Run runs the contract against the repositories newRepo makes.
func Run(t *testing.T, newRepo NewRepository) {
	ctx := context.Background()

	t.Run("Create", func(t *testing.T) {
		repo := newRepo(t, Clock())
		in := newProject("uuid")
		in.InsertedAt = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) // ignored: the repository stamps
		got, err := repo.Create(ctx, in)
		require.NoError(t, err)

		want := newProject("uuid")
		want.Status = domain.StatusPending
		want.InsertedAt, want.UpdatedAt = T0, T0
		assert.Equal(t, want, got)

		stored, err := repo.Get(ctx, "uuid")
		require.NoError(t, err)
		assert.Equal(t, got, stored, "Create returns the record as stored")
	})

	t.Run("CreateKeepsAGivenStatus", func(t *testing.T) {
		repo := newRepo(t, Clock())
		p := newProject("a")
		p.Status = domain.StatusCloning
		got, err := repo.Create(ctx, p)
		require.NoError(t, err)
		assert.Equal(t, domain.StatusCloning, got.Status)
	})

	t.Run("CreateDuplicate", func(t *testing.T) {
		repo := newRepo(t, Clock())
		first, err := repo.Create(ctx, newProject("a"))
		require.NoError(t, err)

		dup := newProject("a")
		dup.Name = "other"
		_, err = repo.Create(ctx, dup)
		require.ErrorIs(t, err, ports.ErrProjectExists)
		assert.NotErrorIs(t, err, ports.ErrProjectNotFound)

		stored, err := repo.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, first, stored, "the first record is untouched")
	})

	t.Run("CreateRejectsInvalidProject", func(t *testing.T) {
		repo := newRepo(t, Clock())
		tests := map[string]domain.Project{
			"empty id":           {},
			"id forging a topic": {ID: "a:*"},
			"bad status":         {ID: "a", Status: "Compiling"},
		}
		for name, p := range tests {
			t.Run(name, func(t *testing.T) {
				_, err := repo.Create(ctx, p)
				require.ErrorIs(t, err, domain.ErrInvalidProject)
				_, err = repo.Get(ctx, p.ID)
				assert.ErrorIs(t, err, ports.ErrProjectNotFound, "nothing stored")
			})
		}
	})

	t.Run("GetNotFound", func(t *testing.T) {
		repo := newRepo(t, Clock())
		_, err := repo.Get(ctx, "nope")
		assert.ErrorIs(t, err, ports.ErrProjectNotFound)
	})

	t.Run("UpdateStatus", func(t *testing.T) {
		repo := newRepo(t, Clock())
		created, err := repo.Create(ctx, newProject("a"))
		require.NoError(t, err)

		got, err := repo.UpdateStatus(ctx, "a", domain.StatusCompiling)
		require.NoError(t, err)
		want := created
		want.Status = domain.StatusCompiling
		want.UpdatedAt = T0.Add(time.Minute)
		assert.Equal(t, want, got, "status and UpdatedAt change, nothing else")

		stored, err := repo.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, got, stored, "UpdateStatus returns the record as stored")

		// A status this version does not know is stored as is.
		got, err = repo.UpdateStatus(ctx, "a", "running_tests")
		require.NoError(t, err)
		assert.Equal(t, domain.Status("running_tests"), got.Status)
		assert.Equal(t, T0.Add(2*time.Minute), got.UpdatedAt)
	})

	t.Run("UpdateStatusNotFound", func(t *testing.T) {
		repo := newRepo(t, Clock())
		_, err := repo.UpdateStatus(ctx, "nope", domain.StatusReady)
		assert.ErrorIs(t, err, ports.ErrProjectNotFound)
	})

	t.Run("UpdateStatusRejectsInvalidStatus", func(t *testing.T) {
		repo := newRepo(t, Clock())
		created, err := repo.Create(ctx, newProject("a"))
		require.NoError(t, err)
		for _, s := range []domain.Status{"", "Compiling", "fetching-deps"} {
			_, err := repo.UpdateStatus(ctx, "a", s)
			assert.ErrorIs(t, err, domain.ErrInvalidProject, "%q", s)
		}
		stored, err := repo.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, created, stored, "a rejected update changes nothing")
	})

	t.Run("DefaultClockIsUTC", func(t *testing.T) {
		repo := newRepo(t, nil)
		before := time.Now()
		p, err := repo.Create(ctx, newProject("a"))
		require.NoError(t, err)
		assert.Equal(t, time.UTC, p.InsertedAt.Location(), "timestamps encode as ...Z like the seed's")
		assert.False(t, p.InsertedAt.Before(before.Add(-time.Second)))
		stored, err := repo.Get(ctx, "a")
		require.NoError(t, err)
		assert.Equal(t, p, stored)
	})

	t.Run("ConcurrentUse", func(t *testing.T) {
		repo := newRepo(t, Clock())
		const projects, updates = 8, 100
		for i := range projects {
			_, err := repo.Create(ctx, newProject(fmt.Sprintf("p%d", i)))
			require.NoError(t, err)
		}
		var wg sync.WaitGroup
		for i := range projects {
			wg.Go(func() {
				id := fmt.Sprintf("p%d", i)
				var last time.Time
				for range updates {
					p, err := repo.UpdateStatus(ctx, id, domain.StatusCompiling)
					assert.NoError(t, err)
					assert.True(t, p.UpdatedAt.After(last), "UpdatedAt moves forward")
					last = p.UpdatedAt
					_, err = repo.Get(ctx, id)
					assert.NoError(t, err)
				}
			})
		}
		wg.Wait()
	})
}
