package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/app"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// databaseFlags is the PostgreSQL part of the configuration
// (--database-url): the durable mode.
type databaseFlags struct {
	url          string
	timeout      time.Duration
	outboxBatch  int
	outboxPoll   time.Duration
	outboxGroup  string
	dedupeWindow int
}

func (d *databaseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.url, "database-url", "", "PostgreSQL URL (postgres://user@host:5432/db): POST /events answers 202 once the event is committed to the transactional outbox, GET /projects reads the database, the demo runs on it; empty: everything in memory")
	fs.DurationVar(&d.timeout, "database-timeout", 5*time.Second, "longest a POST /events or GET /projects waits for the database before 503")
	fs.IntVar(&d.outboxBatch, "outbox-batch", 100, "outbox rows the forwarder reads per transaction")
	fs.DurationVar(&d.outboxPoll, "outbox-poll", 50*time.Millisecond, "how long the forwarder waits after finding the outbox empty")
	fs.StringVar(&d.outboxGroup, "outbox-group", "statusbroadcaster", "the forwarder's consumer group: instances in one group forward one at a time (kafka mode: keep one group; memory mode: one per instance)")
	fs.IntVar(&d.dedupeWindow, "dedupe-window", 10_000, "with --database-url or --pubsub kafka: event UUIDs remembered to skip the repeats an outbox forwards after a crash")
}

func (d databaseFlags) validate() error {
	if d.dedupeWindow <= 0 {
		return errors.New("--dedupe-window must be positive")
	}
	if d.url == "" {
		return nil
	}
	if d.timeout <= 0 || d.outboxPoll <= 0 {
		return errors.New("durations must be positive")
	}
	if d.outboxBatch <= 0 || d.outboxGroup == "" {
		return errors.New("--outbox-batch must be positive and --outbox-group set")
	}
	return nil
}

// durable is the database side of statusd. A nil *durable (no
// --database-url) does nothing: every method is safe on nil.
type durable struct {
	flags databaseFlags
	log   *slog.Logger
	pool  *pgxpool.Pool
	store *postgres.Store
	fwd   *postgres.Forwarder
}

// openDurable connects and migrates, or returns nil without a URL.
func openDurable(ctx context.Context, flags databaseFlags, logger *slog.Logger) (*durable, error) {
	if flags.url == "" {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pool, err := postgres.Open(ctx, flags.url)
	if err != nil {
		return nil, err
	}
	return &durable{flags: flags, log: logger, pool: pool}, nil
}

// busConfig skips repeated event UUIDs where an outbox may forward an
// event twice: with a database, and in kafka mode (another instance's
// outbox publishes to the same topic).
func (d databaseFlags) busConfig(pubsubMode string, cfg *pubsub.Config) {
	if d.url != "" || pubsubMode == "kafka" {
		cfg.DedupeUUIDs = d.dedupeWindow
	}
}

// start builds the store on the Bus's topic and starts the forwarder.
func (d *durable) start(bus *pubsub.Bus) error {
	if d == nil {
		return nil
	}
	d.store = postgres.NewStore(d.pool, postgres.StoreConfig{Topic: bus.Topic(), Timeout: d.flags.timeout, Check: bus.CheckMessage}, d.log)
	fwd, err := postgres.StartForwarder(d.pool, bus.Publisher(), postgres.ForwarderConfig{
		ConsumerGroup: d.flags.outboxGroup,
		BatchSize:     d.flags.outboxBatch,
		PollInterval:  d.flags.outboxPoll,
		// What is being published at shutdown is forwarded again by the
		// next forwarder: no need to hold the shutdown for it.
		CloseTimeout: time.Second,
	}, d.log)
	if err != nil {
		return fmt.Errorf("outbox forwarder: %w", err)
	}
	d.fwd = fwd
	return nil
}

// apiConfig makes POST /events durable and GET /projects read the
// database; readiness includes the database.
func (d *durable) apiConfig(cfg *httpapi.Config) {
	if d == nil {
		return
	}
	cfg.Accept = d.store.Accept
	cfg.Projects = d.store
	busReady := cfg.Ready
	cfg.Ready = func(ctx context.Context) error {
		if busReady != nil {
			if err := busReady(ctx); err != nil {
				return err
			}
		}
		return d.store.Ping(ctx)
	}
}

// demo returns the demo's repository and setup flow: on the database,
// each status change and its event one transaction.
func (d *durable) demo(repo ports.ProjectRepository, setup *app.ProjectSetup, bus *pubsub.Bus, logger *slog.Logger) (ports.ProjectRepository, *app.ProjectSetup) {
	if d == nil {
		return repo, setup
	}
	repo = d.store.Repository()
	return repo, app.NewProjectSetup(repo, bus, logger, app.WithTransactor(d.store))
}

// stopForwarding stops the forwarder; call it before closing the Bus.
func (d *durable) stopForwarding() error {
	if d == nil || d.fwd == nil {
		return nil
	}
	if err := d.fwd.Close(); err != nil {
		return fmt.Errorf("outbox forwarder: %w", err)
	}
	return nil
}

// close closes the pool.
func (d *durable) close() {
	if d != nil {
		d.pool.Close()
	}
}
