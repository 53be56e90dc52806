package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// DefaultTopic is the physical topic every event travels on. Its name is
// valid for every Watermill Pub/Sub, Kafka included.
const DefaultTopic = "statusbroadcaster.project-events"

// Config configures a Bus. Zero values take the defaults.
type Config struct {
	// Topic is the physical topic. Default DefaultTopic.
	Topic string
	// OutboxCapacity bounds the events waiting to be published; at the
	// bound the outbox keeps the latest event of each project. Default
	// 10,000.
	OutboxCapacity int
	// BatchSize is the most events one Publish call carries. Default 64.
	BatchSize int
	// RetryMin and RetryMax bound the backoff between publish retries.
	// Defaults 50ms and 5s.
	RetryMin, RetryMax time.Duration
	// FullWait is how long a broadcast may wait for room when the outbox is
	// full while the pub/sub is healthy (a burst), before it coalesces.
	// When the pub/sub is failing or stuck it does not wait at all. Default
	// 5ms, which keeps every broadcast call well under 10ms.
	FullWait time.Duration
	// MaxMessageBytes is the largest record an event may make on the
	// pub/sub (Kafka: the record's size as the producer measures it, key,
	// value and headers). Broadcast* rejects a larger event at once, with
	// domain.ErrInvalidEvent, rather than let it fail at every publish
	// attempt. Default 1 MiB, the Kafka producer's default; the Kafka
	// adapter (adapters/kafka) uses the lower of this and its
	// kafka.Config.MaxMessageBytes.
	MaxMessageBytes int
	// InboxQueueSize bounds the queue of each Inbox. Default 16,384.
	InboxQueueSize int
	// Hub configures the fan-out: history, latest-state cache, default
	// subscription queue size.
	Hub fanout.Config
	// Metrics counts what happens; nil counts nothing.
	Metrics *metrics.Metrics
	// Dedupe, when set, is called for every message before it is
	// dispatched and skips it when it returns true. Adapters whose
	// subscribers may deliver a message twice (a Kafka consumer restarting
	// at an offset it had read) use it.
	Dedupe func(*message.Message) bool
	// DedupeUUIDs, when positive, skips a message whose UUID was among the
	// last DedupeUUIDs dispatched: the repeats of an at-least-once source
	// such as the transactional outbox (adapters/postgres), which
	// publishes a message again, with its UUID, after a crash. Counted as
	// duplicates.
	DedupeUUIDs int
	// Position, when set, returns where a message lies in a partitioned
	// log that every instance reads in the same order (Kafka: partition
	// and offset); the hub then dispatches it with that position
	// (fanout.Hub.DispatchAt), so that with Hub.Cursor set its event id
	// resumes on any instance. The Kafka adapter sets both in gateway mode.
	Position func(*message.Message) (fanout.Position, bool)
	// Ready, when set, is part of the readiness check: the Bus is ready
	// when its router runs and Ready returns nil (Kafka: a broker answers).
	Ready func(context.Context) error
	// AckAfterRead acknowledges a message only once a reader has received
	// it from an inbox, and holds every message back, unacknowledged, while
	// no inbox of this Bus selects a topic (before the first subscribes, or
	// after the last has closed or unsubscribed). A consumer of a durable
	// log that commits what it acknowledges (a Kafka consumer group) is then
	// at least once up to the reader: what a reader has not received is
	// never committed. Watermill's Kafka subscriber hands over the next
	// message of a partition only once the previous one is acknowledged, so
	// each partition waits for the reader (measured: no throughput lost on
	// kfake, see BENCHMARKS.md). A reader that stops reading stops the
	// consumption of the partitions whose events it holds: backpressure,
	// not coalescing, and never the end of the inbox (its queue holds at
	// most one event per partition). An event that no subscribed inbox
	// selects is acknowledged at once. kafka.New sets it for a named
	// consumer group.
	AckAfterRead bool
	// CloseTimeout bounds how long closing the router may take. Default 5s.
	CloseTimeout time.Duration
}

// DefaultMaxMessageBytes is the default of Config.MaxMessageBytes and
// kafka.Config.MaxMessageBytes: 1 MiB, the Kafka producer's default.
const DefaultMaxMessageBytes = 1 << 20

var topicPattern = regexp.MustCompile(`^[a-z0-9._-]{1,249}$`)

func (c *Config) setDefaults() {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.OutboxCapacity <= 0 {
		c.OutboxCapacity = 10_000
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 64
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 50 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.InboxQueueSize <= 0 {
		c.InboxQueueSize = 16_384
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if c.FullWait <= 0 {
		c.FullWait = 5 * time.Millisecond
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = 5 * time.Second
	}
	if c.Hub.Metrics == nil && c.Metrics != nil {
		c.Hub.Metrics = c.Metrics
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if !topicPattern.MatchString(c.Topic) {
		return fmt.Errorf("pubsub: topic %q must be 1-249 characters of [a-z0-9._-]", c.Topic)
	}
	if c.RetryMax < c.RetryMin {
		return fmt.Errorf("pubsub: RetryMax %s is below RetryMin %s", c.RetryMax, c.RetryMin)
	}
	return nil
}

// Bus is the StatusBroadcaster and the subscription side on top of one
// Watermill Publisher and Subscriber. It is safe for concurrent use. Close
// it to flush the outbox and stop its goroutines.
type Bus struct {
	cfg    Config
	log    *slog.Logger
	pub    message.Publisher
	sub    message.Subscriber
	hub    *fanout.Hub
	outbox *outbox
	router *message.Router

	stopRouter context.CancelFunc // cancels the context the router runs with
	routerDone chan struct{}
	closeOnce  sync.Once
	closeErr   error
	closed     chan struct{}
	readers    *readers // see Config.AckAfterRead

	// uuids skips repeated UUIDs (Config.DedupeUUIDs); nil when off.
	uuids *uuidWindow
}

var (
	_ domain.StatusBroadcaster = (*Bus)(nil)
	_ ports.Subscriptions      = (*Bus)(nil)
)

// New returns a running Bus that publishes to pub and consumes sub, both on
// cfg.Topic. The Bus owns pub and sub and closes them in Close. Events
// broadcast before the router has subscribed wait in the outbox.
func New(cfg Config, pub message.Publisher, sub message.Subscriber, logger *slog.Logger) (*Bus, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if pub == nil || sub == nil {
		return nil, errors.New("pubsub: a publisher and a subscriber are required")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, watermillLogger(logger))
	if err != nil {
		return nil, fmt.Errorf("pubsub: router: %w", err)
	}
	runCtx, stopRouter := context.WithCancel(context.Background())
	b := &Bus{
		cfg:        cfg,
		log:        logger,
		pub:        pub,
		sub:        sub,
		hub:        fanout.NewHub(cfg.Hub),
		router:     router,
		stopRouter: stopRouter,
		routerDone: make(chan struct{}),
		closed:     make(chan struct{}),
		readers:    newReaders(cfg.AckAfterRead),
	}
	if cfg.DedupeUUIDs > 0 {
		b.uuids = newUUIDWindow(cfg.DedupeUUIDs)
	}
	router.AddConsumerHandler("statusbroadcaster.fanout", cfg.Topic, sub, b.handle)
	b.outbox = newOutbox(cfg, pub, router.Running(), logger, cfg.Metrics)
	go func() {
		defer close(b.routerDone)
		if err := router.Run(runCtx); err != nil && runCtx.Err() == nil {
			logger.Error("watermill router stopped", "error", err)
		}
	}()
	return b, nil
}

// NewInMemory returns a Bus on Watermill's gochannel: everything in one
// process, for tests, the demo and single-instance deployments.
//
// gochannel is configured with BlockPublishUntilSubscriberAck so that each
// Publish waits until the router handler has taken the message: with one
// publishing goroutine (the outbox) that keeps broadcast order. With the
// default config gochannel fans out through a goroutine per message and
// order is lost (measured: about 19,800 of 20,000 rapid events out of order).
//
// It is also configured with PreserveContext, so that a message reaches the
// router handler with the context it was published with: the event the
// outbox encoded travels there (see codec.FromMessage) and is not decoded
// and encoded again, which was half of the JSON work per event; and
// gochannel no longer makes a cancellable context per message.
func NewInMemory(cfg Config, logger *slog.Logger) (*Bus, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true, PreserveContext: true}, watermillLogger(logger))
	return New(cfg, ch, ch, logger)
}

// watermillLogger bridges Watermill's logs to logger. Watermill reports
// every start and stop of its router at Info; those become Debug here, so
// that the service's Info log says what matters to an operator.
func watermillLogger(logger *slog.Logger) watermill.LoggerAdapter {
	return levelGate{
		LoggerAdapter: watermill.NewSlogLoggerWithLevelMapping(logger, watermillLevels),
		log:           logger,
	}
}

// watermillLevels maps Watermill's log levels to the service's.
var watermillLevels = map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug}

// levelGate drops Watermill's Trace, Debug and Info calls that logger would
// not write before Watermill's slog adapter converts their fields to
// attributes: the adapter converts first and lets slog check the level
// after, which cost an allocation and a map walk per message and hand-off
// (gochannel and the router trace each one), about 250 bytes per event
// measured, for nothing.
type levelGate struct {
	watermill.LoggerAdapter
	log *slog.Logger
}

// enabled reports whether the logger writes Watermill's level l, once
// mapped (watermillLevels).
func (g levelGate) enabled(l slog.Level) bool {
	if mapped, ok := watermillLevels[l]; ok {
		l = mapped
	}
	return g.log.Enabled(context.Background(), l)
}

// Info logs at the level Info is mapped to.
func (g levelGate) Info(msg string, fields watermill.LogFields) {
	if g.enabled(slog.LevelInfo) {
		g.LoggerAdapter.Info(msg, fields)
	}
}

// Debug logs at Debug.
func (g levelGate) Debug(msg string, fields watermill.LogFields) {
	if g.enabled(slog.LevelDebug) {
		g.LoggerAdapter.Debug(msg, fields)
	}
}

// Trace logs at Watermill's LevelTrace, below Debug.
func (g levelGate) Trace(msg string, fields watermill.LogFields) {
	if g.enabled(watermill.LevelTrace) {
		g.LoggerAdapter.Trace(msg, fields)
	}
}

// With keeps the gate.
func (g levelGate) With(fields watermill.LogFields) watermill.LoggerAdapter {
	return levelGate{LoggerAdapter: g.LoggerAdapter.With(fields), log: g.log}
}

// handle is the router handler on the physical topic: decode, then fan out.
// A bad message is logged, counted and acknowledged, so it never stops the
// stream.
func (b *Bus) handle(msg *message.Message) error {
	if b.cfg.AckAfterRead {
		if err := b.readers.awaitListener(b.closed); err != nil {
			return err // not acknowledged: redelivered to whoever consumes next
		}
	}
	if b.cfg.Dedupe != nil && b.cfg.Dedupe(msg) {
		b.cfg.Metrics.DuplicateMessage()
		return nil
	}
	if b.uuids != nil && b.uuids.repeat(msg.UUID) {
		b.cfg.Metrics.DuplicateMessage()
		return nil
	}
	ev, data, err := codec.FromMessage(msg)
	if err != nil {
		b.cfg.Metrics.BadMessage()
		b.log.Warn("skipping bad message", "error", err, "message_uuid", msg.UUID, "topic", b.cfg.Topic)
		return nil
	}
	if b.cfg.AckAfterRead {
		return b.readers.deliver(b.hub, ev, data, b.closed)
	}
	if b.cfg.Position != nil {
		if pos, ok := b.cfg.Position(msg); ok {
			b.hub.DispatchAt(ev, data, pos)
			return nil
		}
	}
	b.hub.Dispatch(ev, data)
	return nil
}

// BroadcastProjectUpdate queues {"event":"project_updated","project":p}
// (broadcast_project_update/1). See domain.StatusBroadcaster. After Close
// it broadcasts nothing and returns an error wrapping
// domain.ErrBroadcasterClosed.
func (b *Bus) BroadcastProjectUpdate(p domain.Project) error {
	ev, err := domain.NewProjectUpdated(p)
	if err != nil {
		b.cfg.Metrics.Invalid()
		return err
	}
	return b.outbox.enqueue(ev)
}

// BroadcastProjectError queues
// {"event":"project_error","project":p,"error":reason}
// (broadcast_project_error/2). See domain.StatusBroadcaster.
func (b *Bus) BroadcastProjectError(p domain.Project, reason string) error {
	ev, err := domain.NewProjectError(p, reason)
	if err != nil {
		b.cfg.Metrics.Invalid()
		return err
	}
	return b.outbox.enqueue(ev)
}

// NewInbox returns a subscriber with no topics; see fanout.Inbox.
func (b *Bus) NewInbox() (ports.Inbox, error) {
	in, err := b.hub.NewInbox(b.cfg.InboxQueueSize)
	if err != nil {
		return nil, err
	}
	return b.readers.wrap(in), nil
}

// Subscribe registers a subscription on the fan-out hub with a snapshot
// or a replay (the SSE gateway's streams); see fanout.Hub.Subscribe. The
// library API's subscribers are inboxes (NewInbox).
func (b *Bus) Subscribe(opts fanout.SubscribeOptions) (*fanout.Subscription, error) {
	return b.hub.Subscribe(opts)
}

// Latest returns the latest event of a project this Bus has delivered.
func (b *Bus) Latest(projectID string) (*fanout.Entry, bool) { return b.hub.Latest(projectID) }

// LatestAll returns the latest event of every project this Bus remembers,
// least recently updated first.
func (b *Bus) LatestAll() []*fanout.Entry { return b.hub.LatestAll() }

// SortedIDs returns the ids of the projects this Bus remembers, sorted;
// see fanout.Hub.SortedIDs.
func (b *Bus) SortedIDs() []string { return b.hub.SortedIDs() }

// LatestOf appends the latest event of each of ids this Bus remembers; see
// fanout.Hub.LatestOf.
func (b *Bus) LatestOf(dst []*fanout.Entry, ids []string) []*fanout.Entry {
	return b.hub.LatestOf(dst, ids)
}

// OutboxDepth returns the number of events waiting to be published.
func (b *Bus) OutboxDepth() int { return b.outbox.depth() }

// Ready returns nil when the Bus delivers events: its router is running and
// the adapter's own check (if any) passes.
func (b *Bus) Ready(ctx context.Context) error {
	select {
	case <-b.closed:
		return errors.New("closed")
	case <-b.routerDone:
		return errors.New("router stopped")
	default:
	}
	select {
	case <-b.router.Running():
	default:
		return errors.New("router not running yet")
	}
	if b.cfg.Ready != nil {
		return b.cfg.Ready(ctx)
	}
	return nil
}

// closeGrace is how long Close waits, past its context's end, for the
// router, the publisher and the subscriber to stop before it abandons them.
const closeGrace = 500 * time.Millisecond

// Close flushes the outbox (until ctx ends), then stops the router, closes
// the publisher and subscriber and ends every subscription. Events not
// published by then are counted and reported in the error.
//
// Close returns by ctx's deadline plus half a second, whatever the
// adapter does. What is still stopping then (the publisher, the outbox's
// pending Publish, the router, the subscriber) is abandoned: Close
// reports it in the error (the caller logs it, once), and the goroutines left behind end by
// themselves once the adapter's own timeouts expire (Kafka: Sarama's read
// timeouts and retries, tens of seconds). The Kafka adapter does not make
// them wait that long: Close cuts its connections when it abandons it, so
// they end at once. With a ctx that never ends, Close waits for them.
//
// Close is idempotent; later calls return the first call's result.
func (b *Bus) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		close(b.closed)
		errs := []error{b.outbox.close(ctx)}
		errs = append(errs, b.stop(ctx))
		b.hub.Close()
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// The steps of stop, as they are reported when abandoned.
const (
	stepPublisher = "closing the publisher"
	stepPublish   = "waiting for the outbox's pending Publish"
	stepRouter    = "closing the router"
	stepSub       = "closing the subscriber"
)

// stop stops the router and closes the publisher and the subscriber; it
// waits for them until ctx ends, then closeGrace more. They stop
// independently, so that one hanging does not keep the others from
// stopping: the publisher, then the outbox loop (which a Publish may
// hold); the router; the subscriber, at the same time as the router, as
// Watermill's Router.Close does.
func (b *Bus) stop(ctx context.Context) error {
	// Watermill's way to stop a router's subscriptions: cancel the context
	// it runs with. A subscriber still starting (Kafka, broker down)
	// gives up, so that Router.Close gets the lock that start holds.
	b.stopRouter()
	separateSub := any(b.sub) != any(b.pub) // gochannel is both
	steps := newCloseSteps(stepPublisher, stepPublish, stepRouter)
	if separateSub {
		steps.add(stepSub)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if !separateSub {
			b.awaitRouterStart() // closing pub closes the subscriber too
		}
		steps.do(stepPublisher, b.pub.Close)
		steps.do(stepPublish, func() error { <-b.outbox.done; return nil })
	})
	wg.Go(func() {
		steps.do(stepRouter, b.closeRouter)
	})
	if separateSub {
		wg.Go(func() {
			b.awaitRouterStart()
			steps.do(stepSub, b.sub.Close)
		})
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	select {
	case <-done:
		return steps.err()
	case <-ctx.Done():
	}
	grace := time.NewTimer(closeGrace)
	defer grace.Stop()
	select {
	case <-done:
		return steps.err()
	case <-grace.C:
	}
	// What is left is read before the abort: cutting the connections
	// makes the abandoned steps return at once, and they would no longer
	// show as abandoned.
	left := steps.left()
	if len(left) == 0 { // they finished as the grace ended
		return steps.err()
	}
	for _, a := range []any{b.pub, b.sub} {
		if a, ok := a.(Aborter); ok {
			a.Abort()
		}
	}
	abandoned := strings.Join(left, ", ")
	return errors.Join(steps.err(), fmt.Errorf("pubsub: close abandoned after the deadline: %s: %w", abandoned, context.Cause(ctx)))
}

// awaitRouterStart returns once the router's Run has started its handler,
// or has given up, and reports which. Watermill needs it before anything
// is closed: it counts a handler as running from the moment it is added,
// so a Run whose Subscribe fails (the subscriber was closed under it)
// leaves a goroutine waiting for that handler forever, and Router.Close
// holds the lock that Run needs to start it while it waits for it to stop
// (until CloseTimeout, 5s, in vain). Run gets there quickly once its
// context is cancelled.
func (b *Bus) awaitRouterStart() (started bool) {
	select {
	case <-b.router.Running():
		return true
	case <-b.routerDone:
		return false
	}
}

// closeRouter closes the router, once started.
func (b *Bus) closeRouter() error {
	if !b.awaitRouterStart() {
		return nil // Run gave up: nothing to close
	}
	err := b.router.Close()
	<-b.routerDone
	return err
}

// Aborter is implemented by publishers and subscribers that can make what
// they are still doing fail at once (Kafka: cut their connections). When
// Close abandons them after its deadline it calls Abort, so that the
// goroutines it leaves behind end now rather than after the adapter's own
// timeouts.
type Aborter interface{ Abort() }

// closeSteps records which steps of a shutdown have not finished, and the
// errors of those that have. It is safe for concurrent use.
type closeSteps struct {
	mu   sync.Mutex
	todo []string
	errs []error
}

func newCloseSteps(names ...string) *closeSteps { return &closeSteps{todo: names} }

func (s *closeSteps) add(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.todo = append(s.todo, name)
}

// do runs the step name and records it as finished.
func (s *closeSteps) do(name string, step func() error) {
	err := step()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.todo = slices.DeleteFunc(s.todo, func(n string) bool { return n == name })
	if err != nil {
		s.errs = append(s.errs, err)
	}
}

// left returns the steps not finished, in the order they were declared.
func (s *closeSteps) left() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.todo)
}

// err returns the errors of the steps finished so far.
func (s *closeSteps) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}
