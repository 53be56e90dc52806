package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// errSubscriberClosed is returned by Subscribe after Close.
var errSubscriberClosed = errors.New("kafka: subscriber closed")

// retryingSubscriber wraps watermill-kafka's Subscriber so that a Bus can
// start while no broker answers. watermill-kafka reconnects by itself once
// it has subscribed, but its first Subscribe fails when it cannot reach a
// broker, and the router would then stop for good. retryingSubscriber
// keeps trying in the background and forwards the messages once it
// succeeds.
//
// Subscribe waits for the first attempt (so that with a broker up, reading
// starts before the router reports running), but no longer than ctx lasts
// and the subscriber is open: the router holds its lock meanwhile, and
// closing the router needs it. Each attempt first checks, within
// probeTimeout, that a broker answers with the topic's partitions:
// watermill-kafka leaks the Sarama client of an attempt that fails after
// connecting (for instance on a missing topic), and it waits out Sarama's
// full timeouts on a broker that never answers.
//
// In gateway mode (no consumer group) it also works around
// watermill-kafka reading the topic's partition list only once: see
// watchPartitions.
type retryingSubscriber struct {
	inner   *wmkafka.Subscriber
	count   func(context.Context) (int, error) // the topic's partitions, within probeTimeout
	dialer  *dialer                            // the connections of inner and of the partition watch
	commits bool                               // inner is in a consumer group, which commits on Close
	backoff time.Duration
	log     *slog.Logger
	watch   *partitionWatch // gateway mode only; nil for a consumer group
	// fill, when set, reads the tail of the topic into the history when
	// the consumer first attaches (Config.FillHistory).
	fill     *historyFill
	fillOnce sync.Once

	// attached is closed once the consumer reads the topic.
	attached   chan struct{}
	attachOnce sync.Once

	// life ends when Close is called. mu orders Close after the wg.Add of
	// a Subscribe that saw the subscriber open: Subscribe and Close may
	// run at the same time (the Bus closes its subscriber and its router
	// together).
	mu        sync.Mutex
	life      context.Context
	kill      context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ message.Subscriber = (*retryingSubscriber)(nil)

// newRetryingSubscriber wraps inner, which connects through d and, when
// commits is set, commits the offsets of a consumer group when it closes.
// count returns the topic's partitions. With watch set, it also reads the
// partitions added to the topic later.
func newRetryingSubscriber(inner *wmkafka.Subscriber, d *dialer, commits bool, count func(context.Context) (int, error),
	watch *partitionWatch, backoff time.Duration, log *slog.Logger) *retryingSubscriber {
	s := &retryingSubscriber{
		inner:    inner,
		count:    count,
		dialer:   d,
		commits:  commits,
		backoff:  backoff,
		log:      log,
		watch:    watch,
		attached: make(chan struct{}),
	}
	s.life, s.kill = context.WithCancel(context.Background())
	return s
}

// reading is the subscription of the watermill-kafka Subscriber to the
// topic.
type reading struct {
	msgs <-chan *message.Message
	stop context.CancelFunc // ends the subscription
	// partitions is how many partitions the topic had just before it
	// began: the reading owns partitions 0 to partitions-1, the partition
	// watch the others.
	partitions int
	// fillUntil is the newest offset of each partition just before the
	// consumer began, when a history fill is to come (nil otherwise): the
	// fill reads at least from there, so nothing falls between its records
	// and the consumer's.
	fillUntil []int64
}

// Subscribe implements message.Subscriber. It fails only when the
// subscriber is closed.
func (s *retryingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.life.Err() != nil {
		s.mu.Unlock()
		return nil, errSubscriberClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	started := make(chan struct{}) // a consumer started while Subscribe waits
	failed := make(chan struct{})  // the first attempt failed
	out := make(chan *message.Message)
	go func() {
		defer s.wg.Done()
		defer close(out)
		r, err := s.subscribe(ctx, topic)
		if err == nil {
			close(started)
		} else {
			close(failed)
			if s.life.Err() != nil || ctx.Err() != nil {
				return
			}
			s.log.Error("kafka consumer cannot start; retrying in the background", "error", err, "retry_every", s.backoff)
			if r = s.retry(ctx, topic); r == nil {
				return
			}
		}
		s.forward(ctx, topic, r, out)
	}()
	select {
	case <-started:
	case <-failed:
	case <-ctx.Done():
	case <-s.life.Done():
	}
	return out, nil
}

// retry subscribes until it succeeds or the subscriber is closed or ctx
// ends (and returns nil).
func (s *retryingSubscriber) retry(ctx context.Context, topic string) *reading {
	t := time.NewTicker(s.backoff)
	defer t.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-t.C:
		case <-s.life.Done():
			return nil
		case <-ctx.Done():
			return nil
		}
		r, err := s.subscribe(ctx, topic)
		if err == nil {
			s.log.Info("kafka consumer started", "attempts", attempt)
			return r
		}
		if attempt%10 == 0 && s.life.Err() == nil && ctx.Err() == nil {
			s.log.Error("kafka consumer still cannot start", "error", err, "attempts", attempt)
		}
	}
}

// subscribe makes one attempt to subscribe to the topic. Its check gives
// up when ctx ends or the subscriber closes.
func (s *retryingSubscriber) subscribe(ctx context.Context, topic string) (*reading, error) {
	checkCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	partitions, err := s.count(checkCtx)
	if err != nil {
		return nil, err
	}
	var fillUntil []int64
	if s.fill != nil && !s.fill.over() {
		fillUntil = s.fill.newestOffsets(topic, partitions) // before the consumer fixes where it starts
	}
	readCtx, end := context.WithCancel(ctx)
	msgs, err := s.inner.Subscribe(readCtx, topic)
	if err != nil {
		end()
		return nil, err
	}
	s.attachOnce.Do(func() { close(s.attached) })
	return &reading{msgs: msgs, stop: end, partitions: partitions, fillUntil: fillUntil}, nil
}

// forward hands the messages of r to out until ctx ends, the subscriber
// closes or r ends. In gateway mode it also starts the partition watch,
// which writes the messages of the partitions added later to out itself;
// forward waits for it before it returns (and out is closed).
func (s *retryingSubscriber) forward(ctx context.Context, topic string, r *reading, out chan<- *message.Message) {
	defer r.stop()
	if s.fill != nil {
		// Before anything the consumer reads: the fill's records come
		// first in each partition, the consumer's repeats of them after.
		s.fillOnce.Do(func() { s.fillHistory(ctx, topic, r.partitions, r.fillUntil, out) })
	}
	watching := s.watch != nil && s.watch.every > 0
	taken := &takenPartitions{set: map[int32]bool{}} // partitions below r.partitions the watch took over
	if watching {
		// The watch ends with forward, or as soon as the subscriber closes.
		watchCtx, endWatch := context.WithCancel(ctx)
		stop := context.AfterFunc(s.life, endWatch)
		var watch sync.WaitGroup
		watch.Go(func() { s.watchPartitions(watchCtx, topic, r.partitions, taken, out) })
		defer func() {
			endWatch()
			stop()
			watch.Wait()
		}()
	}
	for {
		select {
		case msg, ok := <-r.msgs:
			if !ok {
				return
			}
			if p, ok := wmkafka.MessagePartitionFromCtx(msg.Context()); ok && watching && (int(p) >= r.partitions || taken.has(p)) {
				// A partition the watch reads: watermill-kafka read the
				// partition list after the count, or reconnected (from the
				// newest offset). One reader per partition keeps its order.
				msg.Ack()
				continue
			}
			select {
			case out <- msg:
			case <-s.life.Done():
				return
			case <-ctx.Done():
				return
			}
		case <-s.life.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// Close stops the consumer and the background retries. A consumer group
// that reads the topic is closed gracefully: it commits its offsets. Any
// other consumer has nothing to hand over, so its connections are cut:
// it stops at once rather than after a pending fetch (up to 500ms), or
// after Sarama's timeouts on a broker that does not answer. Idempotent.
func (s *retryingSubscriber) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.kill()
		s.mu.Unlock()
		select {
		case <-s.attached:
			if !s.commits {
				s.dialer.cut()
			}
		default:
			s.dialer.cut()
		}
		err = s.inner.Close()
		s.wg.Wait()
	})
	return err
}

// Abort cuts the consumer's connections: an attempt to start, or a Close
// (a consumer group committing on a broker that does not answer), still
// under way fails at once. It implements pubsub.Aborter.
func (s *retryingSubscriber) Abort() { s.dialer.cut() }

// offsetTracker remembers, per partition, the offset after the last record
// dispatched, and recognizes a record read again: a consumer group that
// rebalances or restarts resumes from its last committed offset, which
// lags behind what was read. Records are dispatched in offset order per
// partition (watermill-kafka waits for each acknowledgement, and so does
// the partition watch), so one number per partition is enough.
//
// A record below that number is not always a repeat: when the topic is
// deleted and recreated, or truncated, a partition's offsets start again
// from below what was dispatched, and its new records would be skipped for
// good. So before it skips one, the tracker asks the broker for the
// partition's newest offset (newest; the answer is reused for
// verifyFor): a log that now ends below what was dispatched went
// backwards. It then resets the partition's tracking, calls
// wentBackwards (which logs and counts it) and delivers the record.
//
// A record above that number (a gap: compaction, transaction markers, or
// records deleted before they were read) makes it ask for the partition's
// oldest offset, at most once per verifyFor: a log start past what was
// dispatched means records were deleted before this Bus read them, which
// it reports to logStartPassed.
type offsetTracker struct {
	newest         func(partition int32) (int64, error) // nil: never ask, every lower offset is a repeat
	wentBackwards  func(partition int32, offset, dispatched, newest int64)
	oldest         func(partition int32) (int64, error) // nil: gaps are not checked
	logStartPassed func(partition int32, expected, oldest, offset int64)

	mu         sync.Mutex
	next       map[int32]int64
	verified   map[int32]verification
	gapChecked map[int32]time.Time
}

// verification is a partition's newest offset, as the broker said at a
// time.
type verification struct {
	newest int64
	at     time.Time
}

// verifyFor is how long an answer about a partition's newest offset is
// reused: a burst of repeats (a rebalance) costs one request.
const verifyFor = time.Second

func newOffsetTracker() *offsetTracker {
	return &offsetTracker{next: map[int32]int64{}, verified: map[int32]verification{}, gapChecked: map[int32]time.Time{}}
}

// nextOf returns the offset after the last record of partition
// dispatched, if any was.
func (t *offsetTracker) nextOf(partition int32) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next, ok := t.next[partition]
	return next, ok
}

// seen reports whether msg's record was dispatched before, and records it
// as dispatched when it was not. A message without Kafka position is never
// a duplicate.
func (t *offsetTracker) seen(msg *message.Message) bool {
	partition, offset, ok := recordPosition(msg.Context())
	if !ok {
		return false
	}
	return t.seenAt(partition, offset)
}

func (t *offsetTracker) seenAt(partition int32, offset int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	next, ok := t.next[partition]
	if ok && offset > next && t.oldest != nil && time.Since(t.gapChecked[partition]) > verifyFor {
		t.gapChecked[partition] = time.Now()
		t.mu.Unlock() // as below
		oldest, err := t.oldest(partition)
		t.mu.Lock()
		if err == nil && oldest > next {
			t.logStartPassed(partition, next, oldest, offset)
		}
	}
	if !ok || offset >= next {
		t.next[partition] = offset + 1
		return false
	}
	if t.newest == nil {
		return true
	}
	v, ok := t.verified[partition]
	if !ok || time.Since(v.at) > verifyFor {
		// Not under the lock: one partition's question must not hold the
		// others up. Records of one partition come one at a time, so its
		// tracking does not change meanwhile.
		t.mu.Unlock()
		newest, err := t.newest(partition)
		t.mu.Lock()
		if err != nil {
			return true // cannot tell: skip it, as a repeat
		}
		v = verification{newest: newest, at: time.Now()}
		t.verified[partition] = v
		next = t.next[partition]
	}
	if v.newest >= next || offset >= next {
		return offset < next // a repeat: the log still holds what was dispatched
	}
	t.next[partition] = offset + 1
	delete(t.verified, partition)
	t.wentBackwards(partition, offset, next-1, v.newest)
	return false
}

// probeTimeout bounds a check that a broker answers: a readiness probe,
// and the check before each attempt to start the consumer.
const probeTimeout = 2 * time.Second

// errNoAnswer is why a probe gave up at probeTimeout.
var errNoAnswer = fmt.Errorf("no answer within %s", probeTimeout)

// probe checks that a broker answers with the topic's partitions. It
// connects afresh (an existing connection can look fine to a client long
// after the broker went away) and gives up after probeTimeout or when ctx
// ends, whichever comes first, however many round trips Sarama has left.
func (k Config) probe(ctx context.Context) error {
	_, err := k.partitionCount(ctx)
	return err
}

// partitionCount returns how many partitions the topic has, as a broker
// answers within probeTimeout (see probe).
func (k Config) partitionCount(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, probeTimeout, errNoAnswer)
	defer cancel()
	conf := k.sarama(roleProbe)
	d := useDialer(conf)
	stop := context.AfterFunc(ctx, d.cut)
	defer stop()
	// gaveUp says why, when ctx ended: Sarama only saw its connections
	// close.
	gaveUp := func(err error) error {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return err
	}
	client, err := sarama.NewClient(k.Brokers, conf)
	if err != nil {
		return 0, fmt.Errorf("kafka: no broker answers: %w", gaveUp(err))
	}
	defer func() { _ = client.Close() }()
	partitions, err := client.Partitions(k.Topic)
	if err != nil {
		return 0, fmt.Errorf("kafka: topic %q: %w", k.Topic, gaveUp(err))
	}
	if len(partitions) == 0 {
		return 0, fmt.Errorf("kafka: topic %q has no partitions", k.Topic)
	}
	return len(partitions), nil
}

// partitionOffset returns sarama.OffsetNewest (the offset the next record
// of a partition of the topic will get) or sarama.OffsetOldest (its first
// retained record's), as a broker answers within probeTimeout.
func (k Config) partitionOffset(partition int32, which int64) (int64, error) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), probeTimeout, errNoAnswer)
	defer cancel()
	conf := k.sarama(roleProbe)
	d := useDialer(conf)
	stop := context.AfterFunc(ctx, d.cut)
	defer stop()
	client, err := sarama.NewClient(k.Brokers, conf)
	if err != nil {
		return 0, fmt.Errorf("kafka: no broker answers: %w", err)
	}
	defer func() { _ = client.Close() }()
	return client.GetOffset(k.Topic, partition, which)
}

// brokerProbe checks that a broker answers and knows the topic, for the
// readiness check, and caches the answer briefly so that frequent probes
// cost one connection.
type brokerProbe struct {
	kcfg  Config
	cache time.Duration

	mu      sync.Mutex
	checked time.Time
	err     error
}

func newBrokerProbe(kcfg Config) *brokerProbe {
	return &brokerProbe{kcfg: kcfg, cache: 500 * time.Millisecond}
}

// check returns nil when a broker answered with the topic's partitions.
// It blocks for at most probeTimeout, less when ctx ends sooner.
func (p *brokerProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checked.IsZero() && time.Since(p.checked) < p.cache {
		return p.err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := p.kcfg.probe(ctx)
	if ctx.Err() != nil {
		return err // the caller gave up: say nothing about the broker
	}
	p.err, p.checked = err, time.Now()
	return err
}
