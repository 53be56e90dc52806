package postgres

import (
	"context"
	stdsql "database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// OutboxTopic is the watermill-sql topic of the outbox; its table is
// watermill_statusbroadcaster_outbox (migrations/0002_outbox.sql).
const OutboxTopic = "statusbroadcaster_outbox"

// schema is the watermill-sql schema of the outbox table. v4's
// DefaultPostgreSQLSchema orders rows by (transaction_id, offset) and reads
// only rows of transactions below the oldest one still running
// (pg_snapshot_xmin), so that a transaction that commits after a later
// one can never be skipped — the ordering caveat of the older
// offset-only schemas with concurrent writers.
func schema(batchSize int) wsql.DefaultPostgreSQLSchema {
	return wsql.DefaultPostgreSQLSchema{
		SubscribeBatchSize: batchSize,
		// The tables are created by Migrate, never implicitly.
		InitializeSchemaWithoutTransaction: true,
	}
}

// Executor is a transaction the outbox writes to: wrap a pgx.Tx with
// wsql.TxFromPgx or a *sql.Tx with wsql.TxFromStdSQL (package
// github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql).
type Executor = wsql.ContextExecutor

// Outbox writes events to the outbox table inside the caller's
// transaction, through Watermill: a watermill-sql Publisher on the
// transaction, wrapped by a components/forwarder Publisher that envelopes
// each message with its destination, the Bus's physical topic. The message
// is the codec's (codec.NewMessage): the same payload, metadata and UUID
// the Bus would publish. It is safe for concurrent use.
type Outbox struct {
	topic string
	log   *slog.Logger
	check func(*message.Message) error // nil: none
}

// NewOutbox returns an outbox whose events are forwarded to topic (the
// Bus's physical topic; "" is pubsub.DefaultTopic).
func NewOutbox(topic string, logger *slog.Logger) *Outbox {
	if topic == "" {
		topic = pubsub.DefaultTopic
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Outbox{topic: topic, log: logger}
}

// Checking returns the outbox that also vets each message with check
// before it writes it (pubsub.Bus.CheckMessage: an event too large for the
// pub/sub is refused in its transaction, with domain.ErrInvalidEvent,
// rather than committed and dropped when it is forwarded).
func (o *Outbox) Checking(check func(*message.Message) error) *Outbox {
	c := *o
	c.check = check
	return &c
}

// Write writes ev to the outbox in tx. It takes the project's transaction
// lock first (LockProject). The event is published once tx commits, and
// never if it rolls back.
func (o *Outbox) Write(ctx context.Context, tx Executor, ev domain.Event) error {
	msg, err := codec.NewMessage(ev) // validates
	if err != nil {
		return err
	}
	if o.check != nil {
		if err := o.check(msg); err != nil {
			return err
		}
	}
	if err := LockProject(ctx, tx, ev.Project.ID); err != nil {
		return err
	}
	msg.SetContext(ctx) // watermill-sql runs the insert with it
	pub, err := wsql.NewPublisher(tx, wsql.PublisherConfig{SchemaAdapter: schema(0)}, nil)
	if err != nil {
		return fmt.Errorf("postgres: outbox: %w", err)
	}
	fwd := forwarder.NewPublisher(pub, forwarder.PublisherConfig{ForwarderTopic: OutboxTopic})
	if err := fwd.Publish(o.topic, msg); err != nil {
		return fmt.Errorf("postgres: outbox: %w", err)
	}
	return nil
}

// Broadcaster returns a StatusBroadcaster whose events go to the outbox in
// tx (Write). Unlike the Bus, its methods return database errors too: the
// caller must roll tx back then. Use it only until tx ends.
func (o *Outbox) Broadcaster(ctx context.Context, tx Executor) domain.StatusBroadcaster {
	return &txBroadcaster{ctx: ctx, tx: tx, outbox: o}
}

// PgxBroadcaster is Broadcaster for a pgx transaction.
func (o *Outbox) PgxBroadcaster(ctx context.Context, tx pgx.Tx) domain.StatusBroadcaster {
	return o.Broadcaster(ctx, wsql.TxFromPgx(tx))
}

// SQLBroadcaster is Broadcaster for a database/sql transaction (on the pgx
// stdlib driver, or any PostgreSQL driver).
func (o *Outbox) SQLBroadcaster(ctx context.Context, tx *stdsql.Tx) domain.StatusBroadcaster {
	return o.Broadcaster(ctx, wsql.TxFromStdSQL(tx))
}

type txBroadcaster struct {
	ctx    context.Context
	tx     Executor
	outbox *Outbox
}

func (b *txBroadcaster) BroadcastProjectUpdate(p domain.Project) error {
	ev, err := domain.NewProjectUpdated(p)
	if err != nil {
		return err
	}
	return b.outbox.Write(b.ctx, b.tx, ev)
}

func (b *txBroadcaster) BroadcastProjectError(p domain.Project, reason string) error {
	ev, err := domain.NewProjectError(p, reason)
	if err != nil {
		return err
	}
	return b.outbox.Write(b.ctx, b.tx, ev)
}

// LockProject takes the transaction-scoped advisory lock of a project
// (pg_advisory_xact_lock), held until tx ends. Outbox.Write and the Store's
// repository take it before they write.
//
// Why: the outbox is read in transaction id order, and PostgreSQL assigns a
// transaction its id at its first write. Two transactions about one project
// that take this lock before their first write get their ids in the order
// they commit, so the project's events leave in commit order. A transaction
// that writes something else first should call LockProject before that
// write when other transactions may change the same project at the same
// time.
func LockProject(ctx context.Context, tx Executor, projectID string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, projectLockKey(projectID)); err != nil {
		return fmt.Errorf("postgres: lock project %q: %w", projectID, err)
	}
	return nil
}

func lockProject(ctx context.Context, db querier, projectID string) error {
	if _, err := db.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, projectLockKey(projectID)); err != nil {
		return fmt.Errorf("postgres: lock project %q: %w", projectID, err)
	}
	return nil
}

// projectLockKey maps a project id to an advisory lock key, in a key space
// of its own (the high bit pattern keeps it apart from small integer keys).
func projectLockKey(id string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("statusbroadcaster.project:" + id))
	return int64(h.Sum64())
}

// Store is the PostgreSQL side of a durable statusd: the repository, the
// outbox, and transactions that join them (ports.Transactor). It is safe
// for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	outbox *Outbox
	now    func() time.Time
	// Timeout bounds each transaction of Accept and InTx that has no
	// earlier deadline. Default 5s.
	timeout time.Duration
}

var _ ports.Transactor = (*Store)(nil)

// StoreConfig configures a Store. Zero values take the defaults.
type StoreConfig struct {
	// Topic is the Bus's physical topic the outbox forwards to. Default
	// pubsub.DefaultTopic.
	Topic string
	// Timeout bounds a transaction (Accept, InTx) whose context has no
	// earlier deadline: a caller never waits longer for a database that
	// does not answer. Default 5s.
	Timeout time.Duration
	// Now stamps records; nil is time.Now in UTC, to the second.
	Now func() time.Time
	// Check, when set, vets each event's message before it is written
	// (see Outbox.Checking): statusd passes the Bus's CheckMessage.
	Check func(*message.Message) error
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool, cfg StoreConfig, logger *slog.Logger) *Store {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Store{pool: pool, outbox: NewOutbox(cfg.Topic, logger).Checking(cfg.Check), now: clockOrDefault(cfg.Now), timeout: cfg.Timeout}
}

// Repository returns the repository outside any transaction.
func (s *Store) Repository() *Repository { return &Repository{db: s.pool, now: s.now} }

// Outbox returns the outbox the Store writes to.
func (s *Store) Outbox() *Outbox { return s.outbox }

// InTx runs fn in one transaction; see ports.Transactor. The repository
// takes the project's lock (LockProject) before each write.
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context, repo ports.ProjectRepository, broadcaster domain.StatusBroadcaster) error) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		repo := &Repository{db: tx, now: s.now, lock: true}
		return fn(ctx, repo, s.outbox.PgxBroadcaster(ctx, tx))
	})
}

// ErrUnavailable wraps the errors of Accept that are the database's, not
// the event's: the event was not stored, and the caller may try again.
var ErrUnavailable = errors.New("database unavailable")

// Accept stores the event's project as the event carries it and writes the
// event to the outbox, in one transaction: when it returns nil, the event
// is committed and will be published (the durable accept of POST /events).
// Invalid events are domain.ErrInvalidEvent; database failures wrap
// ErrUnavailable.
func (s *Store) Accept(ctx context.Context, ev domain.Event) error {
	if err := ev.Validate(); err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockProject(ctx, tx, ev.Project.ID); err != nil {
			return err
		}
		if err := save(ctx, tx, ev.Project); err != nil {
			return err
		}
		return s.outbox.Write(ctx, wsql.TxFromPgx(tx), ev)
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Projects returns every stored project by id, at most limit (<= 0: all).
func (s *Store) Projects(ctx context.Context, limit int) ([]domain.Project, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Repository().List(ctx, limit)
}

// Project returns one stored project, or ports.ErrProjectNotFound.
func (s *Store) Project(ctx context.Context, id string) (domain.Project, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return s.Repository().Get(ctx, id)
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= s.timeout {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.timeout)
}
