package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/repotest"
	"github.com/statusbroadcaster/statusbroadcaster/app"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// failingCommit is a Transactor whose transactions fail after fn
// succeeded, as a failed commit would: the update and the event were
// written, and are rolled back together.
type failingCommit struct{ ports.Transactor }

var errCommit = errors.New("commit failed")

func (f failingCommit) InTx(ctx context.Context, fn func(context.Context, ports.ProjectRepository, domain.StatusBroadcaster) error) error {
	return f.Transactor.InTx(ctx, func(ctx context.Context, repo ports.ProjectRepository, b domain.StatusBroadcaster) error {
		if err := fn(ctx, repo, b); err != nil {
			return err
		}
		return errCommit
	})
}

// The seed's flow on PostgreSQL with the transactional outbox: every
// status change and its event commit together and arrive in order, the
// error included; a transaction that fails broadcasts nothing and changes
// nothing.
func TestProjectSetupWithTransactor(t *testing.T) {
	ctx := context.Background()
	pool := pgtest.Pool(t, pgtest.Schema(t))
	store := postgres.NewStore(pool, postgres.StoreConfig{Now: repotest.Clock()}, nil)
	bus := newBus(t, pubsub.Config{DedupeUUIDs: 1000})
	fwd, err := postgres.StartForwarder(pool, bus.Publisher(), postgres.ForwarderConfig{}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, fwd.Close()) })
	in := newInbox(t, bus, "*")
	repo := store.Repository()
	_, err = repo.Create(ctx, domain.Project{ID: "42", Name: "my_app"})
	require.NoError(t, err)

	// The Bus as broadcaster is never used for status changes: the events
	// come through the outbox, once.
	setup := app.NewProjectSetup(repo, bus, nil, app.WithTransactor(store))
	err = setup.Run(ctx, "42", []app.Step{
		{Status: domain.StatusCloning, Run: func(context.Context, domain.Project) error { return nil }},
		{Status: domain.StatusFetchingDeps, Run: func(context.Context, domain.Project) error { return errors.New("Mix deps.get failed") }},
	})
	var stepErr *app.StepError
	require.ErrorAs(t, err, &stepErr)

	for _, want := range []domain.Status{domain.StatusCloning, domain.StatusFetchingDeps} {
		ev := receive(t, in)
		assert.Equal(t, domain.EventProjectUpdated, ev.Type)
		assert.Equal(t, want, ev.Project.Status)
	}
	ev := receive(t, in)
	assert.Equal(t, domain.EventProjectError, ev.Type)
	assert.Equal(t, domain.StatusFailed, ev.Project.Status)
	assert.Equal(t, "Mix deps.get failed", ev.Error)
	stored, err := repo.Get(ctx, "42")
	require.NoError(t, err)
	assert.Equal(t, stored, ev.Project, "the event carries the record as committed")

	// A failed transaction: the setup fails, nothing changed, nothing sent.
	failing := app.NewProjectSetup(repo, bus, nil, app.WithTransactor(failingCommit{store}))
	err = failing.Run(ctx, "42", nil)
	require.ErrorIs(t, err, errCommit)
	after, err := repo.Get(ctx, "42")
	require.NoError(t, err)
	assert.Equal(t, stored, after)
	select {
	case ev := <-in.Events():
		t.Fatalf("a failed transaction broadcast %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
}
