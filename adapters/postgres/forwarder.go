package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ForwarderConfig configures a Forwarder. Zero values take the defaults.
type ForwarderConfig struct {
	// ConsumerGroup is the outbox's consumer group: forwarders of one group
	// share the outbox, one batch at a time. Default "statusbroadcaster".
	ConsumerGroup string
	// BatchSize is how many outbox rows one read takes (watermill-sql's
	// SubscribeBatchSize). The read's transaction holds the group's
	// offset row locked until the batch is forwarded; a crash in the
	// middle forwards the batch's unacknowledged rest again. Default 100.
	BatchSize int
	// PollInterval is how long the forwarder waits after a read that found
	// nothing. Default 50ms: the lag of an idle outbox.
	PollInterval time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to publish
	// one message (the pub/sub is down). Defaults 50ms and 2s.
	RetryMin, RetryMax time.Duration
	// AckDeadline is how long one message may take to publish, retries
	// included, before the batch's transaction is ended and the message
	// read again. Default 30s.
	AckDeadline time.Duration
	// Retention is how long forwarded rows stay in the outbox table before
	// they are deleted. Default 1h; negative keeps them.
	Retention time.Duration
	// CloseTimeout bounds Close. Default 5s.
	CloseTimeout time.Duration
}

func (c *ForwarderConfig) setDefaults() {
	if c.ConsumerGroup == "" {
		c.ConsumerGroup = "statusbroadcaster"
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 50 * time.Millisecond
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 50 * time.Millisecond
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(c.RetryMin, 2*time.Second)
	}
	if c.AckDeadline <= 0 {
		c.AckDeadline = 30 * time.Second
	}
	if c.Retention == 0 {
		c.Retention = time.Hour
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 5 * time.Second
	}
}

// Forwarder moves events from the outbox table to the real publisher:
// Watermill's components/forwarder, reading the outbox through a
// watermill-sql Subscriber and publishing each unwrapped message, with its
// UUID, payload and metadata, on its destination topic.
//
// Delivery is at least once: a row is acknowledged, in the group's offset
// row, after the publisher has taken it; a crash in between publishes it
// again. Order: events of one project leave in the order their
// transactions committed (see LockProject), also with several forwarders
// in one consumer group, because a read holds the group's offset row
// locked (SELECT … FOR UPDATE) until its batch is forwarded and
// acknowledged: one forwarder forwards at a time, the others wait and take
// over when it stops.
type Forwarder struct {
	fwd     *forwarder.Forwarder
	sub     *wsql.Subscriber
	pool    *pgxpool.Pool
	cfg     ForwarderConfig
	log     *slog.Logger
	closing chan struct{}
	done    chan struct{} // the router's Run returned
	pruned  chan struct{}
	once    sync.Once
	err     error
}

// StartForwarder starts forwarding the outbox in pool to out, in the
// background, until Close. out is not closed by the Forwarder.
func StartForwarder(pool *pgxpool.Pool, out message.Publisher, cfg ForwarderConfig, logger *slog.Logger) (*Forwarder, error) {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	wlog := watermill.NewSlogLoggerWithLevelMapping(logger, map[slog.Level]slog.Level{
		slog.LevelInfo: slog.LevelDebug,
		// watermill-sql logs every failed read at Error, and a lost
		// connection is retried: our own log says when it matters.
		slog.LevelError: slog.LevelWarn,
	})
	ackDeadline := cfg.AckDeadline
	sub, err := wsql.NewSubscriber(finishingBeginner{wsql.BeginnerFromPgx(pool)}, wsql.SubscriberConfig{
		ConsumerGroup:  cfg.ConsumerGroup,
		AckDeadline:    &ackDeadline,
		PollInterval:   cfg.PollInterval,
		ResendInterval: cfg.RetryMin,
		BackoffManager: &quietBackoff{cfg: cfg, log: logger},
		SchemaAdapter:  schema(cfg.BatchSize),
		OffsetsAdapter: wsql.DefaultPostgreSQLOffsetsAdapter{},
	}, wlog)
	if err != nil {
		return nil, fmt.Errorf("postgres: forwarder: %w", err)
	}
	f := &Forwarder{sub: sub, pool: pool, cfg: cfg, log: logger, closing: make(chan struct{}), done: make(chan struct{}), pruned: make(chan struct{})}
	f.fwd, err = forwarder.NewForwarder(sub, out, wlog, forwarder.Config{
		ForwarderTopic: OutboxTopic,
		CloseTimeout:   cfg.CloseTimeout,
		Middlewares:    []message.HandlerMiddleware{f.retry},
		// A row that is not an envelope was not written by Outbox: it is
		// logged and skipped rather than blocking the outbox for good.
		AckWhenCannotUnwrap: true,
	})
	if err != nil {
		_ = sub.Close()
		return nil, fmt.Errorf("postgres: forwarder: %w", err)
	}
	go func() {
		defer close(f.done)
		if err := f.fwd.Run(context.Background()); err != nil {
			logger.Error("outbox forwarder stopped", "error", err)
		}
	}()
	go f.prune()
	return f, nil
}

// Running is closed once the forwarder reads the outbox.
func (f *Forwarder) Running() <-chan struct{} { return f.fwd.Running() }

// retry keeps a message in its handler until the publisher takes it: the
// next messages of the batch wait behind it, so order is kept. It gives up
// when the forwarder closes or the message's ack deadline passes (the row
// is then read again). A failure is logged at the first attempt and every
// tenth.
func (f *Forwarder) retry(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		wait := f.cfg.RetryMin
		for attempt := 1; ; attempt++ {
			out, err := h(msg)
			if err == nil {
				if attempt > 1 {
					f.log.Info("outbox forwarding resumed", "attempts", attempt)
				}
				return out, nil
			}
			if attempt == 1 || attempt%10 == 0 {
				f.log.Warn("outbox forwarding failed; retrying", "error", err, "attempt", attempt)
			}
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-f.closing:
				t.Stop()
				return nil, err
			case <-msg.Context().Done():
				t.Stop()
				return nil, err
			}
			wait = min(2*wait, f.cfg.RetryMax)
		}
	}
}

// prune deletes forwarded rows older than the retention, every minute.
func (f *Forwarder) prune() {
	defer close(f.pruned)
	if f.cfg.Retention < 0 {
		return
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-f.closing:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := f.Prune(ctx, f.cfg.Retention); err != nil {
			f.log.Warn("pruning the outbox failed", "error", err)
		}
		cancel()
	}
}

// Prune deletes the rows the consumer group has forwarded that are older
// than age, and returns how many.
func (f *Forwarder) Prune(ctx context.Context, age time.Duration) (int64, error) {
	tag, err := f.pool.Exec(ctx, `DELETE FROM watermill_statusbroadcaster_outbox m
		USING watermill_offsets_statusbroadcaster_outbox o
		WHERE o.consumer_group = $1
		  AND (m.transaction_id, m."offset") <= (o.last_processed_transaction_id, o.offset_acked)
		  AND m.created_at < LOCALTIMESTAMP - make_interval(secs => $2)`,
		f.cfg.ConsumerGroup, age.Seconds())
	if err != nil {
		return 0, fmt.Errorf("postgres: prune outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}

// Close stops forwarding: the message being published is given up to
// CloseTimeout, and whatever was not acknowledged is forwarded again by the
// next forwarder to run. Idempotent.
func (f *Forwarder) Close() error {
	f.once.Do(func() {
		close(f.closing)
		errs := []error{f.fwd.Close(), f.sub.Close()}
		<-f.done
		<-f.pruned
		f.err = errors.Join(errs...)
	})
	return f.err
}

// Pending returns how many outbox rows the consumer group has not
// forwarded yet.
func Pending(ctx context.Context, pool *pgxpool.Pool, consumerGroup string) (int64, error) {
	if consumerGroup == "" {
		consumerGroup = "statusbroadcaster"
	}
	var n int64
	err := pool.QueryRow(ctx, `SELECT count(*) FROM watermill_statusbroadcaster_outbox m
		LEFT JOIN watermill_offsets_statusbroadcaster_outbox o ON o.consumer_group = $1
		WHERE o.consumer_group IS NULL
		   OR (m.transaction_id, m."offset") > (o.last_processed_transaction_id, o.offset_acked)`, consumerGroup).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("postgres: outbox pending: %w", err)
	}
	return n, nil
}

// quietBackoff is the forwarder's watermill-sql BackoffManager: like the
// default one, but while the database is unreachable it logs the first
// failure and every 50th rather than each (several a second), backs off up
// to RetryMax, and says when reading resumes.
type quietBackoff struct {
	cfg ForwarderConfig
	log *slog.Logger

	mu       sync.Mutex
	failures int
}

func (q *quietBackoff) HandleError(_ watermill.LoggerAdapter, noMsg bool, err error) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err == nil {
		if q.failures > 0 {
			q.log.Info("reading the outbox resumed", "failures", q.failures)
			q.failures = 0
		}
		if noMsg {
			return q.cfg.PollInterval
		}
		return 0
	}
	if strings.Contains(strings.ToLower(err.Error()), "concurrent update") {
		// Another forwarder of the group held the offsets row: the
		// ordinary hand-over between instances, not a failure.
		return 0
	}
	q.failures++
	if q.failures == 1 || q.failures%50 == 0 {
		q.log.Warn("reading the outbox failed; retrying", "error", err, "failures", q.failures)
	}
	return min(q.cfg.RetryMin<<min(q.failures, 10), q.cfg.RetryMax)
}
