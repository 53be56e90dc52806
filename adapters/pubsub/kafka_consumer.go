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

// retryingSubscriber wraps watermill-kafka's Subscriber so that a Bus can
// start while no broker answers. watermill-kafka reconnects by itself once
// it has subscribed, but its first Subscribe fails when it cannot reach a
// broker, and the router would then stop for good. retryingSubscriber
// tries once, synchronously (so that with a broker up, reading starts
// before the router reports running), and otherwise keeps trying in the
// background and forwards the messages once it succeeds.
//
// Before each attempt it checks that a broker answers with the topic's
// partitions: watermill-kafka leaks the Sarama client of an attempt that
// fails after connecting (for instance on a missing topic).
type retryingSubscriber struct {
	inner   *kafka.Subscriber
	check   func() error
	backoff time.Duration
	log     *slog.Logger

	// attached is closed once the consumer reads the topic.
	attached   chan struct{}
	attachOnce sync.Once

	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ message.Subscriber = (*retryingSubscriber)(nil)

func newRetryingSubscriber(inner *kafka.Subscriber, check func() error, backoff time.Duration, log *slog.Logger) *retryingSubscriber {
	return &retryingSubscriber{
		inner:    inner,
		check:    check,
		backoff:  backoff,
		log:      log,
		attached: make(chan struct{}),
		closing:  make(chan struct{}),
	}
}

// Subscribe implements message.Subscriber. It fails only when the
// subscriber is closed.
func (s *retryingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	select {
	case <-s.closing:
		return nil, errors.New("kafka: subscriber closed")
	default:
	}
	msgs, err := s.subscribe(ctx, topic)
	if err == nil {
		return msgs, nil
	}
	s.log.Error("kafka consumer cannot start; retrying in the background", "error", err, "retry_every", s.backoff)
	out := make(chan *message.Message)
	s.wg.Go(func() {
		defer close(out)
		msgs := s.retry(ctx, topic)
		if msgs == nil {
			return
		}
		for msg := range msgs {
			select {
			case out <- msg:
			case <-s.closing:
				return
			case <-ctx.Done():
				return
			}
		}
	})
	return out, nil
}

// retry subscribes until it succeeds (and returns the messages) or the
// subscriber is closed (and returns nil).
func (s *retryingSubscriber) retry(ctx context.Context, topic string) <-chan *message.Message {
	t := time.NewTicker(s.backoff)
	defer t.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-t.C:
		case <-s.closing:
			return nil
		case <-ctx.Done():
			return nil
		}
		msgs, err := s.subscribe(ctx, topic)
		if err == nil {
			s.log.Info("kafka consumer started", "attempts", attempt)
			return msgs
		}
		if attempt%10 == 0 {
			s.log.Error("kafka consumer still cannot start", "error", err, "attempts", attempt)
		}
	}
}

// subscribe makes one attempt.
func (s *retryingSubscriber) subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	msgs, err := s.inner.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	s.attachOnce.Do(func() { close(s.attached) })
	return msgs, nil
}

// Close stops the consumer and the background retries. Idempotent.
func (s *retryingSubscriber) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closing)
		err = s.inner.Close()
		s.wg.Wait()
	})
	return err
}

// offsetTracker remembers, per partition, the offset after the last record
// dispatched, and recognizes a record read again: a consumer group that
// rebalances or restarts resumes from its last committed offset, which
// lags behind what was read. Records are dispatched in offset order per
// partition (watermill-kafka waits for each acknowledgement), so one number
// per partition is enough.
type offsetTracker struct {
	mu   sync.Mutex
	next map[int32]int64
}

func newOffsetTracker() *offsetTracker { return &offsetTracker{next: map[int32]int64{}} }

// seen reports whether msg's record was dispatched before, and records it
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
	return t.seenAt(partition, offset)
}

func (t *offsetTracker) seenAt(partition int32, offset int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if next, ok := t.next[partition]; ok && offset < next {
		return true
	}
	t.next[partition] = offset + 1
	return false
}

// brokerProbe checks that a broker answers and knows the topic, for the
// readiness check. It connects afresh each time (an existing connection
// can look fine to a client long after the broker went away), with short
// timeouts, and caches the answer briefly so that frequent probes cost one
// connection.
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
// It blocks for at most the probe timeout (2s, less when ctx has a closer
// deadline).
func (p *brokerProbe) check(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.checked.IsZero() && time.Since(p.checked) < p.cache {
		return p.err
	}
	timeout := 2 * time.Second
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if timeout <= 0 {
		return context.DeadlineExceeded
	}
	kcfg := p.kcfg
	kcfg.DialTimeout = timeout
	conf := kcfg.sarama(roleProbe)
	conf.Net.ReadTimeout = timeout
	p.err = probe(kcfg.Brokers, kcfg.Topic, conf)
	p.checked = time.Now()
	return p.err
}

func probe(brokers []string, topic string, conf *sarama.Config) error {
	client, err := sarama.NewClient(brokers, conf)
	if err != nil {
		return fmt.Errorf("kafka: no broker answers: %w", err)
	}
	defer func() { _ = client.Close() }()
	partitions, err := client.Partitions(topic)
	if err != nil {
		return fmt.Errorf("kafka: topic %q: %w", topic, err)
	}
	if len(partitions) == 0 {
		return fmt.Errorf("kafka: topic %q has no partitions", topic)
	}
	return nil
}
