package memory_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/memory"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

var t0 = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// clock returns t0, then a minute later at every call.
func clock() func() time.Time {
	var mu sync.Mutex
	next := t0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now := next
		next = next.Add(time.Minute)
		return now
	}
}

func newProject(id string) domain.Project {
	return domain.Project{
		ID: id, Name: "my_app",
		CodeRepo: "https://github.com/user/my_app", DocsRepo: "https://github.com/user/my_app_docs",
	}
}

func TestCreate(t *testing.T) {
	ctx := context.Background()
	repo := memory.NewRepository(clock())

	in := newProject("uuid")
	in.InsertedAt = time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC) // ignored: the repository stamps
	got, err := repo.Create(ctx, in)
	require.NoError(t, err)

	want := newProject("uuid")
	want.Status = domain.StatusPending
	want.InsertedAt, want.UpdatedAt = t0, t0
	assert.Equal(t, want, got)

	stored, err := repo.Get(ctx, "uuid")
	require.NoError(t, err)
	assert.Equal(t, got, stored, "Create returns the record as stored")
}

func TestCreateKeepsAGivenStatus(t *testing.T) {
	repo := memory.NewRepository(clock())
	p := newProject("a")
	p.Status = domain.StatusCloning
	got, err := repo.Create(context.Background(), p)
	require.NoError(t, err)
	assert.Equal(t, domain.StatusCloning, got.Status)
}

func TestCreateDuplicate(t *testing.T) {
	ctx := context.Background()
	repo := memory.NewRepository(clock())
	first, err := repo.Create(ctx, newProject("a"))
	require.NoError(t, err)

	dup := newProject("a")
	dup.Name = "other"
	_, err = repo.Create(ctx, dup)
	require.Error(t, err)
	assert.NotErrorIs(t, err, ports.ErrProjectNotFound)

	stored, err := repo.Get(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, first, stored, "the first record is untouched")
}

func TestCreateRejectsInvalidProject(t *testing.T) {
	repo := memory.NewRepository(clock())
	tests := map[string]domain.Project{
		"empty id":           {},
		"id forging a topic": {ID: "a:*"},
		"bad status":         {ID: "a", Status: "Compiling"},
	}
	for name, p := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := repo.Create(context.Background(), p)
			require.ErrorIs(t, err, domain.ErrInvalidProject)
			_, err = repo.Get(context.Background(), p.ID)
			assert.ErrorIs(t, err, ports.ErrProjectNotFound, "nothing stored")
		})
	}
}

func TestGetNotFound(t *testing.T) {
	repo := memory.NewRepository(clock())
	_, err := repo.Get(context.Background(), "nope")
	assert.ErrorIs(t, err, ports.ErrProjectNotFound)
}

func TestUpdateStatus(t *testing.T) {
	ctx := context.Background()
	repo := memory.NewRepository(clock())
	created, err := repo.Create(ctx, newProject("a"))
	require.NoError(t, err)

	got, err := repo.UpdateStatus(ctx, "a", domain.StatusCompiling)
	require.NoError(t, err)
	want := created
	want.Status = domain.StatusCompiling
	want.UpdatedAt = t0.Add(time.Minute)
	assert.Equal(t, want, got, "status and UpdatedAt change, nothing else")

	stored, err := repo.Get(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, got, stored, "UpdateStatus returns the record as stored")

	// A status this version does not know is stored as is.
	got, err = repo.UpdateStatus(ctx, "a", "running_tests")
	require.NoError(t, err)
	assert.Equal(t, domain.Status("running_tests"), got.Status)
	assert.Equal(t, t0.Add(2*time.Minute), got.UpdatedAt)
}

func TestUpdateStatusNotFound(t *testing.T) {
	repo := memory.NewRepository(clock())
	_, err := repo.UpdateStatus(context.Background(), "nope", domain.StatusReady)
	assert.ErrorIs(t, err, ports.ErrProjectNotFound)
}

func TestUpdateStatusRejectsInvalidStatus(t *testing.T) {
	ctx := context.Background()
	repo := memory.NewRepository(clock())
	created, err := repo.Create(ctx, newProject("a"))
	require.NoError(t, err)
	for _, s := range []domain.Status{"", "Compiling", "fetching-deps"} {
		_, err := repo.UpdateStatus(ctx, "a", s)
		assert.ErrorIs(t, err, domain.ErrInvalidProject, "%q", s)
	}
	stored, err := repo.Get(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, created, stored, "a rejected update changes nothing")
}

func TestDefaultClockIsUTC(t *testing.T) {
	repo := memory.NewRepository(nil)
	before := time.Now()
	p, err := repo.Create(context.Background(), newProject("a"))
	require.NoError(t, err)
	assert.Equal(t, time.UTC, p.InsertedAt.Location(), "timestamps encode as ...Z like the seed's")
	assert.False(t, p.InsertedAt.Before(before.Add(-time.Second)))
}

func TestConcurrentUse(t *testing.T) {
	ctx := context.Background()
	repo := memory.NewRepository(clock())
	const projects, updates = 8, 200
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
}
