package app_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/memory"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/repotest"
	"github.com/statusbroadcaster/statusbroadcaster/app"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// liveness bounds waits for something that must happen; it is never a
// measurement.
const liveness = 10 * time.Second

func newRepo(t *testing.T, ids ...string) *memory.Repository {
	t.Helper()
	repo := memory.NewRepository(repotest.Clock())
	for _, id := range ids {
		_, err := repo.Create(context.Background(), domain.Project{
			ID: id, Name: id + "_app",
			CodeRepo: "https://github.com/user/" + id, DocsRepo: "https://github.com/user/" + id + "_docs",
		})
		require.NoError(t, err)
	}
	return repo
}

func newBus(t *testing.T, cfg pubsub.Config) *pubsub.Bus {
	t.Helper()
	bus, err := pubsub.NewInMemory(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { closeBus(t, bus) })
	return bus
}

func closeBus(t *testing.T, bus *pubsub.Bus) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	assert.NoError(t, bus.Close(ctx))
}

func newInbox(t *testing.T, subs ports.Subscriptions, topics ...string) ports.Inbox {
	t.Helper()
	in, err := subs.NewInbox()
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	for _, id := range topics {
		if id == "*" {
			require.NoError(t, in.SubscribeToAllProjects())
		} else {
			require.NoError(t, in.SubscribeToProject(id))
		}
	}
	return in
}

func receive(t *testing.T, in ports.Inbox) domain.Event {
	t.Helper()
	select {
	case ev, ok := <-in.Events():
		require.True(t, ok, "inbox ended: %v", in.Err())
		return ev
	case <-time.After(liveness):
		require.FailNow(t, "no event")
		return domain.Event{}
	}
}

// call is one call of a recorder: the event, and the record the
// repository held at the moment of the call.
type call struct {
	Event  domain.Event
	Stored domain.Project
}

// recorder is a StatusBroadcaster that records its calls. err, when set,
// is returned from every call, as a broadcaster rejecting its input would.
type recorder struct {
	repo ports.ProjectRepository
	err  error

	mu    sync.Mutex
	calls []call
}

var _ domain.StatusBroadcaster = (*recorder)(nil)

func (r *recorder) BroadcastProjectUpdate(p domain.Project) error {
	r.record(domain.Event{Type: domain.EventProjectUpdated, Project: p})
	return r.err
}

func (r *recorder) BroadcastProjectError(p domain.Project, reason string) error {
	r.record(domain.Event{Type: domain.EventProjectError, Project: p, Error: reason})
	return r.err
}

func (r *recorder) record(ev domain.Event) {
	stored, _ := r.repo.Get(context.Background(), ev.Project.ID)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{Event: ev, Stored: stored})
}

func (r *recorder) Calls() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// steps returns one step per status; the step of failAt (if any) fails
// with failErr. Each step records the project it was given.
func steps(failAt domain.Status, failErr error, seen *[]domain.Project) []app.Step {
	var out []app.Step
	for _, s := range app.DemoSteps {
		out = append(out, app.Step{Status: s, Run: func(_ context.Context, p domain.Project) error {
			if seen != nil {
				*seen = append(*seen, p)
			}
			if s == failAt {
				return failErr
			}
			return nil
		}})
	}
	return out
}

var setupOrder = []domain.Status{
	domain.StatusCloning, domain.StatusFetchingDeps, domain.StatusCompiling,
	domain.StatusGeneratingDocs, domain.StatusReady,
}

func TestRunBroadcastsEveryStatusOverARealBus(t *testing.T) {
	repo := newRepo(t, "uuid", "other")
	bus := newBus(t, pubsub.Config{})
	in := newInbox(t, bus, "uuid")
	all := newInbox(t, bus, "*")
	setup := app.NewProjectSetup(repo, bus, nil)

	var given []domain.Project
	require.NoError(t, setup.Run(context.Background(), "uuid", steps("", nil, &given)))

	var got []domain.Project
	for range setupOrder {
		ev := receive(t, in)
		assert.Equal(t, domain.EventProjectUpdated, ev.Type)
		assert.Empty(t, ev.Error)
		got = append(got, ev.Project)
	}
	for i, want := range setupOrder {
		assert.Equal(t, want, got[i].Status, "event %d", i)
		assert.Equal(t, "uuid_app", got[i].Name, "the full record")
		assert.Equal(t, "https://github.com/user/uuid", got[i].CodeRepo)
		assert.Equal(t, "https://github.com/user/uuid_docs", got[i].DocsRepo)
		assert.Equal(t, repotest.T0, got[i].InsertedAt)
		assert.Equal(t, repotest.T0.Add(time.Duration(i+2)*time.Minute), got[i].UpdatedAt, "stamped by the repository update")
	}
	// Each step was given the record it broadcast.
	assert.Equal(t, got[:len(app.DemoSteps)], given)

	stored, err := repo.Get(context.Background(), "uuid")
	require.NoError(t, err)
	assert.Equal(t, stored, got[len(got)-1], "the last broadcast is the record as stored")

	// A dashboard sees the same events.
	for i := range setupOrder {
		assert.Equal(t, got[i], receive(t, all).Project)
	}
}

func TestRunBroadcastsAfterEachUpdate(t *testing.T) {
	repo := newRepo(t, "uuid")
	rec := &recorder{repo: repo}
	setup := app.NewProjectSetup(repo, rec, nil)
	require.NoError(t, setup.Run(context.Background(), "uuid", steps("", nil, nil)))

	calls := rec.Calls()
	require.Len(t, calls, len(setupOrder))
	for i, c := range calls {
		assert.Equal(t, domain.EventProjectUpdated, c.Event.Type)
		assert.Equal(t, setupOrder[i], c.Event.Project.Status)
		assert.Equal(t, c.Stored, c.Event.Project, "call %d: the broadcast record is the one in the repository", i)
	}
}

func TestRunFailingStep(t *testing.T) {
	repo := newRepo(t, "uuid")
	bus := newBus(t, pubsub.Config{})
	in := newInbox(t, bus, "uuid")
	setup := app.NewProjectSetup(repo, bus, nil)

	cause := errors.New("Mix deps.get failed")
	var given []domain.Project
	err := setup.Run(context.Background(), "uuid", steps(domain.StatusFetchingDeps, cause, &given))

	var stepErr *app.StepError
	require.ErrorAs(t, err, &stepErr)
	assert.Equal(t, domain.StatusFetchingDeps, stepErr.Status)
	assert.ErrorIs(t, err, cause)
	assert.Len(t, given, 2, "no step runs after the failed one")

	stored, err := repo.Get(context.Background(), "uuid")
	require.NoError(t, err)
	assert.Equal(t, domain.StatusFailed, stored.Status)

	assert.Equal(t, domain.StatusCloning, receive(t, in).Project.Status)
	assert.Equal(t, domain.StatusFetchingDeps, receive(t, in).Project.Status)
	ev := receive(t, in)
	assert.Equal(t, domain.EventProjectError, ev.Type)
	assert.Equal(t, "Mix deps.get failed", ev.Error)
	assert.Equal(t, stored, ev.Project, "the failed record as stored")
}

func TestRunFailingStepWithoutMessage(t *testing.T) {
	// A project_error always has a message, even when the step's error
	// has none.
	repo := newRepo(t, "uuid")
	rec := &recorder{repo: repo}
	setup := app.NewProjectSetup(repo, rec, nil)
	err := setup.Run(context.Background(), "uuid", steps(domain.StatusCompiling, errors.New(""), nil))
	require.Error(t, err)

	calls := rec.Calls()
	require.NotEmpty(t, calls)
	last := calls[len(calls)-1]
	assert.Equal(t, domain.EventProjectError, last.Event.Type)
	assert.NotEmpty(t, last.Event.Error)
	assert.Contains(t, last.Event.Error, "compiling")
	assert.Equal(t, domain.StatusFailed, last.Event.Project.Status)
	assert.Equal(t, last.Stored, last.Event.Project)
	_, err = domain.NewProjectError(last.Event.Project, last.Event.Error)
	assert.NoError(t, err, "a real broadcaster accepts it")
}

func TestRunUnknownProject(t *testing.T) {
	repo := newRepo(t)
	rec := &recorder{repo: repo}
	setup := app.NewProjectSetup(repo, rec, nil)
	ran := false
	err := setup.Run(context.Background(), "nope", []app.Step{{Status: domain.StatusCloning, Run: func(context.Context, domain.Project) error {
		ran = true
		return nil
	}}})
	require.ErrorIs(t, err, ports.ErrProjectNotFound)
	assert.False(t, ran)
	assert.Empty(t, rec.Calls(), "nothing to broadcast")
}

func TestRunIgnoresBroadcasterErrors(t *testing.T) {
	for _, failAt := range []domain.Status{"", domain.StatusCompiling} {
		t.Run("fail at "+string(failAt), func(t *testing.T) {
			repo := newRepo(t, "uuid")
			rec := &recorder{repo: repo, err: fmt.Errorf("%w: rejected", domain.ErrInvalidEvent)}
			setup := app.NewProjectSetup(repo, rec, nil)
			err := setup.Run(context.Background(), "uuid", steps(failAt, errors.New("boom"), nil))

			stored, getErr := repo.Get(context.Background(), "uuid")
			require.NoError(t, getErr)
			if failAt == "" {
				require.NoError(t, err, "a broadcaster error does not fail the setup")
				assert.Equal(t, domain.StatusReady, stored.Status)
				assert.Len(t, rec.Calls(), len(setupOrder), "every status was still broadcast")
				return
			}
			var stepErr *app.StepError
			require.ErrorAs(t, err, &stepErr, "only the step's own error is returned")
			assert.NotErrorIs(t, err, domain.ErrInvalidEvent)
			assert.Equal(t, domain.StatusFailed, stored.Status)
		})
	}
}

// stuckPublisher is a pub/sub that is down: Publish hangs until Close.
type stuckPublisher struct {
	once   sync.Once
	closed chan struct{}
}

func (p *stuckPublisher) Publish(string, ...*message.Message) error {
	<-p.closed
	return errors.New("publisher closed")
}

func (p *stuckPublisher) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func TestRunCompletesWhileThePubSubHangs(t *testing.T) {
	repo := newRepo(t, "uuid")
	sub := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	bus, err := pubsub.New(pubsub.Config{OutboxCapacity: 2}, &stuckPublisher{closed: make(chan struct{})}, sub, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = bus.Close(ctx) // reports the events it could not publish
	})
	setup := app.NewProjectSetup(repo, bus, nil)

	done := make(chan error, 1)
	go func() {
		// Several setups: more events than the outbox holds.
		var err error
		for range 3 {
			if _, err = repo.UpdateStatus(context.Background(), "uuid", domain.StatusPending); err != nil {
				break
			}
			if err = setup.Run(context.Background(), "uuid", steps("", nil, nil)); err != nil {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(liveness):
		t.Fatal("the setup is held up by a pub/sub that does not answer")
	}
	stored, err := repo.Get(context.Background(), "uuid")
	require.NoError(t, err)
	assert.Equal(t, domain.StatusReady, stored.Status)
}

func TestRunStopsWhenCanceled(t *testing.T) {
	// A setup interrupted by shutdown is not a failed project.
	repo := newRepo(t, "uuid")
	rec := &recorder{repo: repo}
	setup := app.NewProjectSetup(repo, rec, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ss := steps("", nil, nil)
	ss[1].Run = func(ctx context.Context, _ domain.Project) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	err := setup.Run(ctx, "uuid", ss)
	require.ErrorIs(t, err, context.Canceled)

	stored, getErr := repo.Get(context.Background(), "uuid")
	require.NoError(t, getErr)
	assert.Equal(t, domain.StatusFetchingDeps, stored.Status)
	for _, c := range rec.Calls() {
		assert.Equal(t, domain.EventProjectUpdated, c.Event.Type, "no project_error for a cancellation")
	}
}

func TestRunConcurrentProjectsKeepOrder(t *testing.T) {
	ids := []string{"p1", "p2", "p3", "p4", "p5"}
	repo := newRepo(t, ids...)
	bus := newBus(t, pubsub.Config{})
	all := newInbox(t, bus, "*")
	setup := app.NewProjectSetup(repo, bus, nil)

	const rounds = 20
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() {
			for range rounds {
				assert.NoError(t, setup.Run(context.Background(), id, steps("", nil, nil)))
			}
		})
	}
	next := map[string]int{}
	for range len(ids) * rounds * len(setupOrder) {
		ev := receive(t, all)
		id := ev.Project.ID
		require.Equal(t, setupOrder[next[id]%len(setupOrder)], ev.Project.Status, "order of %s", id)
		next[id]++
	}
	wg.Wait()
}
