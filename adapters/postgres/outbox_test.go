package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/repotest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// liveness bounds waits for something that must happen; never a
// measurement.
const liveness = 20 * time.Second

type env struct {
	pool  *pgxpool.Pool
	store *postgres.Store
	bus   *pubsub.Bus
	inbox ports.Inbox
}

// newEnv returns a store on a fresh schema, an in-memory Bus, and an inbox
// on every project; forwarders are started by the test.
func newEnv(t *testing.T) *env {
	t.Helper()
	pool := pgtest.Pool(t, pgtest.Schema(t))
	bus, err := pubsub.NewInMemory(pubsub.Config{DedupeUUIDs: 10_000}, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, bus.Close(ctx))
	})
	in, err := bus.NewInbox()
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	require.NoError(t, in.SubscribeToAllProjects())
	return &env{pool: pool, store: postgres.NewStore(pool, postgres.StoreConfig{Now: repotest.Clock()}, nil), bus: bus, inbox: in}
}

func (e *env) forward(t *testing.T, out message.Publisher, cfg postgres.ForwarderConfig) *postgres.Forwarder {
	t.Helper()
	if out == nil {
		out = e.bus.Publisher()
	}
	f, err := postgres.StartForwarder(e.pool, out, cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, f.Close()) })
	return f
}

func (e *env) receive(t *testing.T) domain.Event {
	t.Helper()
	select {
	case ev, ok := <-e.inbox.Events():
		require.True(t, ok, "inbox ended: %v", e.inbox.Err())
		return ev
	case <-time.After(liveness):
		require.FailNow(t, "no event")
		return domain.Event{}
	}
}

func (e *env) create(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, err := e.store.Repository().Create(context.Background(), domain.Project{ID: id, Name: id + "_app"})
		require.NoError(t, err)
	}
}

// setStatus is the setup flow's transaction: the update and its event.
func (e *env) setStatus(ctx context.Context, id string, status domain.Status) (domain.Project, error) {
	var p domain.Project
	err := e.store.InTx(ctx, func(ctx context.Context, repo ports.ProjectRepository, b domain.StatusBroadcaster) error {
		var err error
		if p, err = repo.UpdateStatus(ctx, id, status); err != nil {
			return err
		}
		return b.BroadcastProjectUpdate(p)
	})
	return p, err
}

// A committed transaction's state and event go together; a rolled-back
// one leaves neither. The event travels with the codec's metadata and
// keeps its UUID through the outbox.
func TestCommittedEventIsForwardedRolledBackIsNot(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, "a")
	e.forward(t, nil, postgres.ForwarderConfig{})

	boom := errors.New("the step after the update failed")
	err := e.store.InTx(ctx, func(ctx context.Context, repo ports.ProjectRepository, b domain.StatusBroadcaster) error {
		p, err := repo.UpdateStatus(ctx, "a", domain.StatusCompiling)
		require.NoError(t, err)
		require.NoError(t, b.BroadcastProjectUpdate(p))
		return boom
	})
	require.ErrorIs(t, err, boom)
	p, err := e.store.Repository().Get(ctx, "a")
	require.NoError(t, err)
	assert.Equal(t, domain.StatusPending, p.Status, "rolled back")

	committed, err := e.setStatus(ctx, "a", domain.StatusReady)
	require.NoError(t, err)
	ev := e.receive(t)
	assert.Equal(t, domain.Event{Type: domain.EventProjectUpdated, Project: committed}, ev, "the first event is the committed one")
	select {
	case ev := <-e.inbox.Events():
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	n, err := postgres.Pending(ctx, e.pool, "")
	require.NoError(t, err)
	assert.Zero(t, n)
}

// Invalid input is refused before anything is written.
func TestBroadcastInTxRejectsInvalidInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, "a")
	err := e.store.InTx(ctx, func(ctx context.Context, repo ports.ProjectRepository, b domain.StatusBroadcaster) error {
		p, err := repo.Get(ctx, "a")
		require.NoError(t, err)
		return b.BroadcastProjectError(p, "")
	})
	require.ErrorIs(t, err, domain.ErrInvalidEvent)
	require.ErrorIs(t, e.store.Accept(ctx, domain.Event{Type: "nope", Project: domain.Project{ID: "a"}}), domain.ErrInvalidEvent)
	n, err := postgres.Pending(ctx, e.pool, "")
	require.NoError(t, err)
	assert.Zero(t, n)
}

// Accept stores the record as the event carries it and commits the event:
// GET /projects reads it back from the table.
func TestAcceptStoresProjectAndEvent(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	p := domain.Project{ID: "x", Name: "x_app", Status: domain.StatusFailed, InsertedAt: repotest.T0, UpdatedAt: repotest.T0.Add(time.Minute)}
	ev, err := domain.NewProjectError(p, "Mix deps.get failed")
	require.NoError(t, err)
	require.NoError(t, e.store.Accept(ctx, ev))
	stored, err := e.store.Project(ctx, "x")
	require.NoError(t, err)
	assert.Equal(t, p, stored)
	list, err := e.store.Projects(ctx, 0)
	require.NoError(t, err)
	assert.Equal(t, []domain.Project{p}, list)

	e.forward(t, nil, postgres.ForwarderConfig{})
	assert.Equal(t, ev, e.receive(t))
}

// With the Bus's CheckMessage (statusd wires it), an event too large for
// the pub/sub is refused in its transaction with domain.ErrInvalidEvent
// (POST /events: 400): nothing of it is committed, rather than a row the
// forwarder would publish only to see it dropped.
func TestAcceptRefusesAnEventTooLargeForThePubSub(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	small, err := pubsub.NewInMemory(pubsub.Config{MaxMessageBytes: 2_048}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, small.Close(context.Background())) })
	store := postgres.NewStore(e.pool, postgres.StoreConfig{Now: repotest.Clock(), Check: small.CheckMessage}, nil)
	p := domain.Project{ID: "big", Name: "big_app", Status: domain.StatusFailed, InsertedAt: repotest.T0, UpdatedAt: repotest.T0}
	ev, err := domain.NewProjectError(p, strings.Repeat("x", 4_096))
	require.NoError(t, err)
	require.ErrorIs(t, store.Accept(ctx, ev), domain.ErrInvalidEvent)
	_, err = store.Project(ctx, "big")
	require.ErrorIs(t, err, ports.ErrProjectNotFound, "the transaction was rolled back")
	n, err := postgres.Pending(ctx, e.pool, "")
	require.NoError(t, err)
	assert.Zero(t, n, "nothing in the outbox")

	ok, err := domain.NewProjectError(p, "short")
	require.NoError(t, err)
	require.NoError(t, store.Accept(ctx, ok), "an event within the limit is accepted")
}

// recordingPublisher passes messages on and remembers who forwarded what;
// it fails while failing is set.
type recordingPublisher struct {
	next    message.Publisher
	name    string
	failing *atomic.Bool
	mu      *sync.Mutex
	by      map[string]int
	msgs    *[]*message.Message
}

func (p recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.failing != nil && p.failing.Load() {
		return errors.New("pub/sub down")
	}
	if err := p.next.Publish(topic, msgs...); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.by[p.name] += len(msgs)
	if p.msgs != nil {
		*p.msgs = append(*p.msgs, msgs...)
	}
	return nil
}

func (recordingPublisher) Close() error { return nil }

// Events of one project leave in commit order with concurrent writers on
// the same projects, long transactions of other projects committing late,
// and three forwarders in one consumer group; nothing is lost or repeated.
func TestOrderPerProjectWithConcurrentWritersAndThreeForwarders(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const projects, writers, updates = 4, 3, 40
	ids := make([]string, projects)
	for i := range ids {
		ids[i] = fmt.Sprintf("p%d", i)
	}
	e.create(t, ids...)
	e.create(t, "slow")

	var mu sync.Mutex
	by := map[string]int{}
	for i := range 3 {
		e.forward(t, recordingPublisher{next: e.bus.Publisher(), name: fmt.Sprint("forwarder-", i), mu: &mu, by: by},
			postgres.ForwarderConfig{BatchSize: 10, PollInterval: 10 * time.Millisecond})
	}

	var wg sync.WaitGroup
	var committed atomic.Int64
	// Long transactions of another project: each takes its transaction id
	// early and commits after many others have.
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := e.store.InTx(ctx, func(ctx context.Context, repo ports.ProjectRepository, b domain.StatusBroadcaster) error {
				p, err := repo.UpdateStatus(ctx, "slow", domain.StatusCompiling)
				if err != nil {
					return err
				}
				if err := b.BroadcastProjectUpdate(p); err != nil {
					return err
				}
				time.Sleep(30 * time.Millisecond)
				return nil
			})
			if assert.NoError(t, err) {
				committed.Add(1)
			}
		}
	})
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			for u := range updates {
				id := ids[(w+u)%projects]
				_, err := e.setStatus(ctx, id, domain.StatusCompiling)
				if assert.NoError(t, err) {
					committed.Add(1)
				}
			}
		})
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()

	// The store's clock ticks once per update, under the project's lock:
	// per project, UpdatedAt increases in commit order.
	last := map[string]time.Time{}
	want := int(committed.Load())
	for range want {
		ev := e.receive(t)
		id := ev.Project.ID
		require.True(t, ev.Project.UpdatedAt.After(last[id]), "project %s: %s after %s", id, ev.Project.UpdatedAt, last[id])
		last[id] = ev.Project.UpdatedAt
	}
	select {
	case ev := <-e.inbox.Events():
		t.Fatalf("an event too many: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d events in order; forwarded by: %v", want, by)
	total := 0
	for _, n := range by {
		total += n
	}
	assert.Equal(t, want, total, "no event forwarded twice")
}

// While the publisher fails, the forwarder retries the same message: the
// ones behind it wait, and once it is back everything arrives in order.
func TestForwarderRetriesInOrderWhilePublisherFails(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, "a")
	var failing atomic.Bool
	failing.Store(true)
	var mu sync.Mutex
	e.forward(t, recordingPublisher{next: e.bus.Publisher(), failing: &failing, mu: &mu, by: map[string]int{}},
		postgres.ForwarderConfig{RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond})
	var want []domain.Project
	for _, s := range []domain.Status{domain.StatusCloning, domain.StatusFetchingDeps, domain.StatusCompiling, domain.StatusReady} {
		p, err := e.setStatus(ctx, "a", s)
		require.NoError(t, err)
		want = append(want, p)
	}
	select {
	case ev := <-e.inbox.Events():
		t.Fatalf("nothing can arrive while the publisher fails: %+v", ev)
	case <-time.After(300 * time.Millisecond):
	}
	failing.Store(false)
	for _, p := range want {
		assert.Equal(t, p, e.receive(t).Project)
	}
}

// The forwarder publishes the codec's message: payload and metadata are
// what the Bus itself would publish, so the Kafka record is the same.
func TestForwardedMessageIsTheCodecs(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, "a")
	var mu sync.Mutex
	var msgs []*message.Message
	e.forward(t, recordingPublisher{next: e.bus.Publisher(), mu: &mu, by: map[string]int{}, msgs: &msgs}, postgres.ForwarderConfig{})
	p, err := e.setStatus(ctx, "a", domain.StatusReady)
	require.NoError(t, err)
	e.receive(t)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(msgs) == 1 }, liveness, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	ev, _ := domain.NewProjectUpdated(p)
	want, err := codec.NewMessage(ev)
	require.NoError(t, err)
	assert.Equal(t, want.Payload, msgs[0].Payload)
	assert.Equal(t, map[string]string(want.Metadata), map[string]string(msgs[0].Metadata))
}

// Forwarded rows are pruned after the retention; rows not yet forwarded
// never are.
func TestPruneKeepsUnforwardedRows(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, "a")
	_, err := e.setStatus(ctx, "a", domain.StatusReady)
	require.NoError(t, err)
	f := e.forward(t, nil, postgres.ForwarderConfig{Retention: -1})
	e.receive(t)
	require.Eventually(t, func() bool {
		n, err := postgres.Pending(ctx, e.pool, "")
		return err == nil && n == 0
	}, liveness, 5*time.Millisecond, "acknowledged")
	require.NoError(t, f.Close())
	_, err = e.setStatus(ctx, "a", domain.StatusFailed) // not forwarded: the forwarder is closed
	require.NoError(t, err)
	time.Sleep(10 * time.Millisecond)
	n, err := f.Prune(ctx, time.Nanosecond)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "the forwarded row")
	pending, err := postgres.Pending(ctx, e.pool, "")
	require.NoError(t, err)
	assert.EqualValues(t, 1, pending)
}

// A clean Close records what was forwarded: the next forwarder forwards
// again at most the message that was being published at that moment (its
// acknowledgement may lose the race with Close), never the batch.
func TestCloseRecordsWhatWasForwarded(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.create(t, "a")
	for range 5 {
		_, err := e.setStatus(ctx, "a", domain.StatusCompiling)
		require.NoError(t, err)
	}
	f := e.forward(t, nil, postgres.ForwarderConfig{})
	for range 5 {
		e.receive(t)
	}
	require.NoError(t, f.Close()) // at once: the read's acknowledgement may still be on its way
	n, err := postgres.Pending(ctx, e.pool, "")
	require.NoError(t, err)
	assert.LessOrEqual(t, n, int64(1), "nothing but the message in flight is forwarded again")
}
