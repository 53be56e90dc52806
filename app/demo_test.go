package app_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/memory"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/app"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// runDemo starts Demo and returns a channel with its result.
func runDemo(ctx context.Context, cfg app.DemoConfig, repo ports.ProjectRepository, setup *app.ProjectSetup) <-chan error {
	done := make(chan error, 1)
	go func() { done <- app.Demo(ctx, cfg, repo, setup, nil) }()
	return done
}

func waitDemo(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(liveness):
		require.FailNow(t, "Demo did not return")
		return nil
	}
}

// next says which statuses may follow a status in the events of one
// project, and whether by a project_error.
var next = map[domain.Status][]domain.Status{
	domain.StatusPending:        {domain.StatusCloning},
	domain.StatusCloning:        {domain.StatusFetchingDeps, domain.StatusFailed},
	domain.StatusFetchingDeps:   {domain.StatusCompiling, domain.StatusFailed},
	domain.StatusCompiling:      {domain.StatusGeneratingDocs, domain.StatusFailed},
	domain.StatusGeneratingDocs: {domain.StatusReady, domain.StatusFailed},
	domain.StatusReady:          {domain.StatusPending},
	domain.StatusFailed:         {domain.StatusPending},
}

func TestDemo(t *testing.T) {
	const projects = 4
	repo := memory.NewRepository(nil)
	bus := newBus(t, pubsub.Config{})
	all := newInbox(t, bus, "*")
	setup := app.NewProjectSetup(repo, bus, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runDemo(ctx, app.DemoConfig{
		Projects: projects, StepMin: time.Millisecond, StepMax: 2 * time.Millisecond,
		Pause: time.Millisecond, FailureRate: 0.5, Seed: 42,
	}, repo, setup)

	status := map[string]domain.Status{}
	errorsSeen, readySeen := 0, 0
	for len(status) < projects || errorsSeen == 0 || readySeen == 0 {
		ev := receive(t, all)
		p := ev.Project
		prev, ok := status[p.ID]
		if !ok {
			prev = domain.StatusPending // created, not broadcast
		}
		assert.Contains(t, next[prev], p.Status, "%s: %s after %s", p.ID, p.Status, prev)
		switch ev.Type {
		case domain.EventProjectError:
			errorsSeen++
			assert.Equal(t, domain.StatusFailed, p.Status)
			assert.NotEmpty(t, ev.Error)
		case domain.EventProjectUpdated:
			assert.NotEqual(t, domain.StatusFailed, p.Status, "failures come as project_error")
			if p.Status == domain.StatusReady {
				readySeen++
			}
		}
		status[p.ID] = p.Status
	}

	cancel()
	require.ErrorIs(t, waitDemo(t, done), context.Canceled)

	for i := 1; i <= projects; i++ {
		p, err := repo.Get(context.Background(), fmt.Sprintf("demo-%d", i))
		require.NoError(t, err, "the demo creates its projects")
		assert.NotEmpty(t, p.Name)
		assert.NotEmpty(t, p.CodeRepo)
		assert.NotEmpty(t, p.DocsRepo)
	}
	_, err := repo.Get(context.Background(), fmt.Sprintf("demo-%d", projects+1))
	assert.ErrorIs(t, err, ports.ErrProjectNotFound)
}

func TestDemoCancelInterruptsLongSteps(t *testing.T) {
	// Steps and pauses of an hour: only a cancellation that interrupts
	// them lets Demo return.
	repo := memory.NewRepository(nil)
	rec := &recorder{repo: repo}
	setup := app.NewProjectSetup(repo, rec, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runDemo(ctx, app.DemoConfig{
		Projects: 3, StepMin: time.Hour, StepMax: time.Hour, Pause: time.Nanosecond, Seed: 7,
	}, repo, setup)

	// With no pause, every project starts cloning at once, then waits.
	require.Eventually(t, func() bool { return len(rec.Calls()) >= 3 }, liveness, time.Millisecond)
	cancel()
	require.ErrorIs(t, waitDemo(t, done), context.Canceled)

	for i := 1; i <= 3; i++ {
		p, err := repo.Get(context.Background(), fmt.Sprintf("demo-%d", i))
		require.NoError(t, err)
		assert.Equal(t, domain.StatusCloning, p.Status, "an interrupted setup is not a failed one")
	}
	for _, c := range rec.Calls() {
		assert.Equal(t, domain.EventProjectUpdated, c.Event.Type)
	}
}

func TestDemoDeadline(t *testing.T) {
	repo := memory.NewRepository(nil)
	setup := app.NewProjectSetup(repo, &recorder{repo: repo}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := waitDemo(t, runDemo(ctx, app.DemoConfig{Projects: 2, StepMin: time.Hour, StepMax: time.Hour, Seed: 1}, repo, setup))
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// createFailingRepo fails to create one project.
type createFailingRepo struct {
	*memory.Repository
	id string
}

func (r createFailingRepo) Create(ctx context.Context, p domain.Project) (domain.Project, error) {
	if p.ID == r.id {
		return domain.Project{}, errors.New("database is down")
	}
	return r.Repository.Create(ctx, p)
}

func TestDemoCreateErrorStopsEverything(t *testing.T) {
	// Demo fails to create demo-2 after demo-1's loop has started, and
	// must stop that loop before it returns.
	ignore := goleak.IgnoreCurrent()
	repo := createFailingRepo{Repository: memory.NewRepository(nil), id: "demo-2"}
	setup := app.NewProjectSetup(repo, &recorder{repo: repo}, nil)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // only after the leak check
	err := waitDemo(t, runDemo(ctx, app.DemoConfig{
		Projects: 3, StepMin: time.Millisecond, StepMax: time.Millisecond, Pause: time.Millisecond, Seed: 3,
	}, repo, setup))
	require.Error(t, err)
	assert.NotErrorIs(t, err, context.Canceled)
	goleak.VerifyNone(t, ignore)
}

// failingRepo fails every status update of one project.
type failingRepo struct {
	*memory.Repository
	id  string
	err error
}

func (r failingRepo) UpdateStatus(ctx context.Context, id string, s domain.Status) (domain.Project, error) {
	if id == r.id {
		return domain.Project{}, r.err
	}
	return r.Repository.UpdateStatus(ctx, id, s)
}

func TestDemoRepositoryErrorEndsTheDemo(t *testing.T) {
	// "It returns ctx's error, or a repository error": without waiting for
	// a cancellation that may never come.
	ignore := goleak.IgnoreCurrent()
	errDown := errors.New("database down")
	repo := failingRepo{Repository: memory.NewRepository(nil), id: "demo-2", err: errDown}
	setup := app.NewProjectSetup(repo, &recorder{repo: repo}, nil)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel) // only after the leak check
	err := waitDemo(t, runDemo(ctx, app.DemoConfig{
		Projects: 3, StepMin: time.Millisecond, StepMax: time.Millisecond, Pause: time.Millisecond, Seed: 5,
	}, repo, setup))
	assert.ErrorIs(t, err, errDown)
	goleak.VerifyNone(t, ignore)
}

// A database kept from an earlier run already holds the demo's projects:
// the demo carries on with them instead of failing.
func TestDemoReusesExistingProjects(t *testing.T) {
	repo := memory.NewRepository(nil)
	_, err := repo.Create(context.Background(), domain.Project{ID: "demo-2", Name: "kept", Status: domain.StatusReady})
	require.NoError(t, err)
	rec := &recorder{repo: repo}
	setup := app.NewProjectSetup(repo, rec, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := runDemo(ctx, app.DemoConfig{Projects: 2, StepMin: time.Millisecond, StepMax: time.Millisecond, Pause: time.Millisecond, Seed: 3}, repo, setup)
	require.Eventually(t, func() bool {
		for _, c := range rec.Calls() {
			if c.Event.Project.ID == "demo-2" {
				return true
			}
		}
		return false
	}, liveness, time.Millisecond, "demo-2 is set up again")
	cancel()
	assert.ErrorIs(t, waitDemo(t, done), context.Canceled)
	p, err := repo.Get(context.Background(), "demo-2")
	require.NoError(t, err)
	assert.Equal(t, "kept", p.Name)
}
