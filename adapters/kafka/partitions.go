package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// partitionWatch configures how a gateway reads the partitions added to
// the topic after it began reading (watchPartitions).
type partitionWatch struct {
	every time.Duration // how often to count the topic's partitions
	// newClient makes a Sarama client with the consumer's settings that
	// connects through the subscriber's dialer (so Close cuts it too).
	newClient func() (sarama.Client, error)
	// dispatched returns the offset after the last record of a partition
	// the Bus dispatched (ok false when it dispatched none).
	dispatched func(partition int32) (next int64, ok bool)
}

// takenPartitions are the partitions watermill-kafka was reading that the
// watch took over (see watchPartitions). It is safe for concurrent use.
type takenPartitions struct {
	mu  sync.Mutex
	set map[int32]bool
}

func (t *takenPartitions) has(p int32) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.set[p]
}

func (t *takenPartitions) add(p int32) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.set[p] = true
}

// nackResend is how long a partition the watch reads waits before it hands
// a rejected (nacked) message over again, as watermill-kafka does.
const nackResend = 100 * time.Millisecond

// watchPartitions works around watermill-kafka's consumer without a group
// reading the topic's partition list once, when it starts: a partition
// added later would never be read. Every watch.every it counts the topic's
// partitions; when there are more than known, it reads the new ones
// itself, from their oldest offset, with Sarama's partition consumers, and
// writes their messages to out as watermill-kafka would (one at a time per
// partition, the next once the router acknowledged it). watermill-kafka
// keeps reading the partitions it had; forward drops what it reads of the
// others, so that each partition has one reader. It returns when ctx ends,
// once its readers have stopped.
//
// It also takes over, the same way, a partition of watermill-kafka's whose
// log now ends below what the Bus dispatched (the topic was recreated or
// truncated): the Sarama consumer of that partition has given up (its
// offset is out of range), and watermill-kafka reconnects only once all of
// them have, which a partition that never had a record prevents.
// forward then drops what watermill-kafka reads of it.
func (s *retryingSubscriber) watchPartitions(ctx context.Context, topic string, known int, taken *takenPartitions, out chan<- *message.Message) {
	var readers sync.WaitGroup
	defer readers.Wait()
	t := time.NewTicker(s.watch.every)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		s.takeOverStranded(ctx, topic, known, taken, out, &readers)
		n, err := s.count(ctx)
		switch {
		case err != nil || n == known:
			continue // the broker is away: readiness says so, and the readers reconnect by themselves
		case n < known:
			// A broker that has not heard of the new partitions yet, or a
			// recreated topic. known stays: lowering it would give the
			// partitions above a second reader, and their order would be lost.
			if !warned {
				s.log.Warn("kafka topic has fewer partitions than this gateway reads: was it recreated? Restart the gateway",
					"partitions", n, "reading", known)
				warned = true
			}
			continue
		}
		if err := s.readPartitions(ctx, topic, int32(known), int32(n), out, &readers); err != nil {
			if ctx.Err() == nil {
				s.log.Error("kafka topic has new partitions that cannot be read yet; will retry",
					"error", err, "partitions", n, "was", known, "retry_in", s.watch.every)
			}
			continue
		}
		s.log.Info("kafka topic has new partitions: reading them from their oldest offset", "partitions", n, "was", known)
		known = n
	}
}

// takeOverStranded reads, from their oldest offset, the partitions below
// known (watermill-kafka's) not taken yet whose newest offset is below
// what the Bus dispatched: their consumers have given up.
func (s *retryingSubscriber) takeOverStranded(ctx context.Context, topic string, known int, taken *takenPartitions, out chan<- *message.Message, readers *sync.WaitGroup) {
	if s.watch.dispatched == nil {
		return
	}
	var client sarama.Client
	defer func() {
		if client != nil {
			_ = client.Close()
		}
	}()
	for p := range int32(known) {
		next, ok := s.watch.dispatched(p)
		if !ok || next == 0 || taken.has(p) {
			continue
		}
		if client == nil {
			var err error
			if client, err = s.watch.newClient(); err != nil {
				return // the broker is away: try again at the next check
			}
		}
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil || newest >= next {
			continue
		}
		if err := s.readPartitions(ctx, topic, p, p+1, out, readers); err != nil {
			continue
		}
		taken.add(p)
		s.log.Warn("kafka partition ends below what this gateway dispatched (topic recreated or truncated?): reading it again from its oldest offset",
			"partition", p, "newest_offset", newest, "dispatched_up_to", next-1)
	}
}

// readPartitions reads partitions from to to-1 of the topic, from their
// oldest offset, into out, until ctx ends. It fails only when it cannot
// make a client; a partition that cannot be read yet is retried.
func (s *retryingSubscriber) readPartitions(ctx context.Context, topic string, from, to int32, out chan<- *message.Message, readers *sync.WaitGroup) error {
	client, err := s.watch.newClient()
	if err != nil {
		return err
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		_ = client.Close()
		return err
	}
	var partitions sync.WaitGroup
	for p := from; p < to; p++ {
		partitions.Go(func() { s.readPartition(ctx, consumer, topic, p, out) })
	}
	readers.Go(func() {
		partitions.Wait()
		_ = consumer.Close()
		_ = client.Close()
	})
	return nil
}

// readPartition hands the records of a partition to out, one at a time:
// the next once the router acknowledged the last (a nacked one is handed
// over again), until ctx ends. When the partition cannot be read (no
// leader yet) or Sarama gives up on it (its offset went out of range:
// records deleted under a reader that fell behind), it starts again from
// the oldest offset after s.backoff; the offset tracker skips what was
// dispatched.
func (s *retryingSubscriber) readPartition(ctx context.Context, consumer sarama.Consumer, topic string, partition int32, out chan<- *message.Message) {
	for attempt := 1; ; attempt++ {
		pc, err := consumer.ConsumePartition(topic, partition, sarama.OffsetOldest)
		if err == nil {
			if _, ok := consume(ctx, pc, out, -1); !ok {
				pc.AsyncClose()
				return
			}
			s.log.Error("kafka partition consumer ended; reading the partition again from its oldest offset",
				"partition", partition, "retry_in", s.backoff)
		} else if attempt == 1 || attempt%10 == 0 {
			s.log.Error("kafka partition cannot be read yet; will retry", "partition", partition, "error", err,
				"attempts", attempt, "retry_every", s.backoff)
		}
		select {
		case <-time.After(s.backoff):
		case <-ctx.Done():
			return
		}
	}
}

// consume hands the records of pc to out, each once the previous one was
// acknowledged, until ctx ends (false), pc's messages end (true), or, when
// until is not negative, the record before offset until was acknowledged
// (true). It returns how many records it handed over.
func consume(ctx context.Context, pc sarama.PartitionConsumer, out chan<- *message.Message, until int64) (int, bool) {
	for n := 0; ; n++ {
		var rec *sarama.ConsumerMessage
		select {
		case rec = <-pc.Messages():
			if rec == nil {
				return n, true
			}
		case <-ctx.Done():
			return n, false
		}
		msg, _ := lenientUnmarshaler{}.Unmarshal(rec) // never fails
		msgCtx := withRecordPosition(ctx, rec)
		msg.SetContext(msgCtx)
		for {
			select {
			case out <- msg:
			case <-ctx.Done():
				return n, false
			}
			select {
			case <-msg.Acked():
			case <-msg.Nacked():
				msg = msg.Copy()
				msg.SetContext(msgCtx)
				select {
				case <-time.After(nackResend):
				case <-ctx.Done():
					return n, false
				}
				continue
			case <-ctx.Done():
				return n, false
			}
			break
		}
		if until >= 0 && rec.Offset+1 >= until {
			return n + 1, true
		}
	}
}

// positionKey is the context key of the Kafka position of a record read by
// the partition watch (watermill-kafka keeps its own, unexported).
type positionKey struct{}

type position struct {
	partition int32
	offset    int64
}

func withRecordPosition(ctx context.Context, rec *sarama.ConsumerMessage) context.Context {
	return context.WithValue(ctx, positionKey{}, position{rec.Partition, rec.Offset})
}

// recordPosition returns the partition and offset of the record a message
// was read from, by watermill-kafka or by the partition watch.
func recordPosition(ctx context.Context) (partition int32, offset int64, ok bool) {
	if p, ok := ctx.Value(positionKey{}).(position); ok {
		return p.partition, p.offset, true
	}
	partition, ok = wmkafka.MessagePartitionFromCtx(ctx)
	if !ok {
		return 0, 0, false
	}
	offset, ok = wmkafka.MessagePartitionOffsetFromCtx(ctx)
	return partition, offset, ok
}
