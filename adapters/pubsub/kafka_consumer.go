package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
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
	inner   *kafka.Subscriber
	count   func(context.Context) (int, error) // the topic's partitions, within probeTimeout
	dialer  *dialer                            // the connections of inner and reread's Subscriber
	commits bool                               // inner is in a consumer group, which commits on Close
	backoff time.Duration
	log     *slog.Logger

	// The partition watch, in gateway mode (reread is nil otherwise).
	reread  *rereadConfig
	offsets *offsetTracker

	// attached is closed once the consumer reads the topic.
	attached   chan struct{}
	attachOnce sync.Once

	// life ends when Close is called. mu orders Close after the wg.Add of
	// a Subscribe that saw the subscriber open: Subscribe and Close may
	// run at the same time (the Bus closes its subscriber and its router
	// together). It also guards rereader.
	mu        sync.Mutex
	life      context.Context
	kill      context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
	// rereader reads the topic from its oldest offset; made on the first
	// re-read.
	rereader *kafka.Subscriber
}

// rereadConfig is what a gateway needs to re-read the topic when
// partitions were added.
type rereadConfig struct {
	every time.Duration // how often to count the partitions
	// newSubscriber makes a watermill-kafka Subscriber that reads from the
	// oldest offset, through the retryingSubscriber's dialer.
	newSubscriber func() (*kafka.Subscriber, error)
	// fromOldest: the gateway read the topic from its oldest offset to
	// begin with, so it has nothing to leave out when it re-reads.
	fromOldest bool
}

var _ message.Subscriber = (*retryingSubscriber)(nil)

// newRetryingSubscriber wraps inner, which connects through d and, when
// commits is set, commits the offsets of a consumer group when it closes.
// count returns the topic's partitions. With reread set, it re-reads the
// topic when partitions are added, skipping what offsets has seen.
func newRetryingSubscriber(inner *kafka.Subscriber, d *dialer, commits bool, count func(context.Context) (int, error),
	reread *rereadConfig, offsets *offsetTracker, backoff time.Duration, log *slog.Logger) *retryingSubscriber {
	s := &retryingSubscriber{
		inner:    inner,
		count:    count,
		dialer:   d,
		commits:  commits,
		backoff:  backoff,
		log:      log,
		reread:   reread,
		offsets:  offsets,
		attached: make(chan struct{}),
	}
	s.life, s.kill = context.WithCancel(context.Background())
	return s
}

// reading is one subscription of a watermill-kafka Subscriber to the
// topic.
type reading struct {
	msgs       <-chan *message.Message
	stop       context.CancelFunc // ends the subscription
	partitions int                // how many partitions the topic had when it began, at least
	began      time.Time
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
		r, err := s.subscribe(ctx, topic, s.inner)
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
		r, err := s.subscribe(ctx, topic, s.inner)
		if err == nil {
			s.log.Info("kafka consumer started", "attempts", attempt)
			return r
		}
		if attempt%10 == 0 && s.life.Err() == nil && ctx.Err() == nil {
			s.log.Error("kafka consumer still cannot start", "error", err, "attempts", attempt)
		}
	}
}

// subscribe makes one attempt to subscribe sub to the topic. Its check
// gives up when ctx ends or the subscriber closes.
func (s *retryingSubscriber) subscribe(ctx context.Context, topic string, sub *kafka.Subscriber) (*reading, error) {
	began := time.Now()
	checkCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	partitions, err := s.count(checkCtx)
	if err != nil {
		return nil, err
	}
	// Its own context, so that a re-read can end it.
	readCtx, end := context.WithCancel(ctx)
	msgs, err := sub.Subscribe(readCtx, topic)
	if err != nil {
		end()
		return nil, err
	}
	s.attachOnce.Do(func() { close(s.attached) })
	return &reading{msgs: msgs, stop: end, partitions: partitions, began: began}, nil
}

// forward hands the messages of r to out until ctx ends, the subscriber
// closes or r ends; in gateway mode it switches to a re-read of the topic
// when partitions are added (watchPartitions).
func (s *retryingSubscriber) forward(ctx context.Context, topic string, r *reading, out chan<- *message.Message) {
	defer func() { r.stop() }()
	var rereads chan *reading
	if s.reread != nil && s.reread.every > 0 {
		rereads = make(chan *reading)
		// The watch ends with forward, or as soon as the subscriber closes.
		watchCtx, endWatch := context.WithCancel(ctx)
		defer endWatch()
		stop := context.AfterFunc(s.life, endWatch)
		defer stop()
		s.wg.Add(1) // this goroutine is counted: Close's Wait cannot have returned
		go func() {
			defer s.wg.Done()
			s.watchPartitions(watchCtx, topic, r.partitions, rereads)
		}()
	}
	floor := r.began.Add(-rereadMargin) // see offsetTracker.rereading
	if s.reread != nil && s.reread.fromOldest {
		floor = time.Time{}
	}
	for {
		select {
		case msg, ok := <-r.msgs:
			if !ok {
				return
			}
			select {
			case out <- msg:
			case <-s.life.Done():
				return
			case <-ctx.Done():
				return
			}
		case next := <-rereads:
			// Nothing of next has been read yet: what offsets skips from
			// now on applies to all of it.
			s.offsets.rereading(int32(r.partitions), floor)
			r.stop()
			s.log.Info("kafka topic has new partitions: re-reading it from the oldest offset, skipping what was read",
				"partitions", next.partitions, "was", r.partitions)
			r = next
		case <-s.life.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// rereadMargin is how much older than the moment a gateway began reading
// a record may be and still count as new when the gateway re-reads a
// partition it had read nothing from: records are stamped by their
// producer's clock, which may be behind ours.
const rereadMargin = time.Minute

// watchPartitions works around watermill-kafka's consumer without a group
// reading the topic's partition list once, when it starts: a partition
// added later would never be read. Every reread.every it counts the
// topic's partitions; when there are more than known, it subscribes again
// from the oldest offset (so that the new partitions are read from their
// first record) and hands the new reading to forward, which ends the old
// one. The new reading goes over what was read before: offsetTracker
// skips it. It returns when ctx ends.
func (s *retryingSubscriber) watchPartitions(ctx context.Context, topic string, known int, rereads chan<- *reading) {
	t := time.NewTicker(s.reread.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		n, err := s.count(ctx)
		switch {
		case err != nil:
			continue // the broker is away: readiness says so, and the consumer reconnects by itself
		case n < known:
			s.log.Warn("kafka topic has fewer partitions than when this gateway began reading it: was it recreated? Restart the gateway",
				"partitions", n, "was", known)
			known = n
			continue
		case n == known:
			continue
		}
		sub, err := s.rereadSubscriber()
		if err != nil {
			s.log.Error("kafka topic has new partitions, but they cannot be read", "error", err, "partitions", n, "was", known)
			continue
		}
		r, err := s.subscribe(ctx, topic, sub)
		if err != nil {
			s.log.Error("kafka topic has new partitions, but they cannot be read yet; will retry", "error", err, "partitions", n, "was", known)
			continue
		}
		r.partitions = max(r.partitions, n)
		select {
		case rereads <- r:
			known = r.partitions
		case <-ctx.Done():
			r.stop()
			return
		}
	}
}

// rereadSubscriber returns the Subscriber that reads from the oldest
// offset, made on first use.
func (s *retryingSubscriber) rereadSubscriber() (*kafka.Subscriber, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.life.Err() != nil {
		return nil, errSubscriberClosed
	}
	if s.rereader == nil {
		sub, err := s.reread.newSubscriber()
		if err != nil {
			return nil, err
		}
		s.rereader = sub
	}
	return s.rereader, nil
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
		rereader := s.rereader
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
		if rereader != nil {
			err = errors.Join(err, rereader.Close())
		}
		s.wg.Wait()
	})
	return err
}

// abort cuts the consumer's connections: an attempt to start, or a Close
// (a consumer group committing on a broker that does not answer), still
// under way fails at once. See aborter.
func (s *retryingSubscriber) abort() { s.dialer.cut() }

// offsetTracker remembers, per partition, the offset after the last record
// dispatched, and recognizes a record read again: a consumer group that
// rebalances or restarts resumes from its last committed offset, which
// lags behind what was read, and a gateway re-reads the topic when
// partitions are added. Records are dispatched in offset order per
// partition (watermill-kafka waits for each acknowledgement), so one number
// per partition is enough.
type offsetTracker struct {
	mu   sync.Mutex
	next map[int32]int64
	// After a re-read (rereading): a record of a partition below
	// floorBelow from which nothing was dispatched is new only if it is
	// not older than floor.
	floorBelow int32
	floor      time.Time
}

func newOffsetTracker() *offsetTracker { return &offsetTracker{next: map[int32]int64{}} }

// rereading says that the topic is being read again from its oldest
// offset. Of the first partitions (those read before), the ones nothing
// was dispatched from were read from the offset they had when reading
// began: their older records were never meant to be dispatched, and a
// record older than floor (when reading began, less a margin for clock
// skew) is taken for one of them.
func (t *offsetTracker) rereading(partitions int32, floor time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.floorBelow = max(t.floorBelow, partitions)
	t.floor = floor
}

// seen reports whether msg's record was dispatched before (or, after a
// re-read, is older than what was meant to be dispatched), and records it
// as dispatched when it was not. A message without Kafka position is never
// a duplicate.
func (t *offsetTracker) seen(msg *message.Message) bool {
	partition, ok := kafka.MessagePartitionFromCtx(msg.Context())
	if !ok {
		return false
	}
	offset, ok := kafka.MessagePartitionOffsetFromCtx(msg.Context())
	if !ok {
		return false
	}
	ts, _ := kafka.MessageTimestampFromCtx(msg.Context())
	return t.seenAt(partition, offset, ts)
}

func (t *offsetTracker) seenAt(partition int32, offset int64, ts time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	next, ok := t.next[partition]
	if ok && offset < next {
		return true
	}
	if !ok && partition < t.floorBelow && !ts.IsZero() && ts.Before(t.floor) {
		return true
	}
	t.next[partition] = offset + 1
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
func (k KafkaConfig) probe(ctx context.Context) error {
	_, err := k.partitionCount(ctx)
	return err
}

// partitionCount returns how many partitions the topic has, as a broker
// answers within probeTimeout (see probe).
func (k KafkaConfig) partitionCount(ctx context.Context) (int, error) {
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

// brokerProbe checks that a broker answers and knows the topic, for the
// readiness check, and caches the answer briefly so that frequent probes
// cost one connection.
type brokerProbe struct {
	kcfg  KafkaConfig
	cache time.Duration

	mu      sync.Mutex
	checked time.Time
	err     error
}

func newBrokerProbe(kcfg KafkaConfig) *brokerProbe {
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
