package pubsub

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
)

// partitionWatch configures how a gateway reads the partitions added to
// the topic after it began reading (watchPartitions).
type partitionWatch struct {
	every time.Duration // how often to count the topic's partitions
	// newClient makes a Sarama client with the consumer's settings that
	// connects through the subscriber's dialer (so Close cuts it too).
	newClient func() (sarama.Client, error)
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
func (s *retryingSubscriber) watchPartitions(ctx context.Context, topic string, known int, out chan<- *message.Message) {
	var readers sync.WaitGroup
	defer readers.Wait()
	t := time.NewTicker(s.watch.every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		n, err := s.count(ctx)
		switch {
		case err != nil || n == known:
			continue // the broker is away: readiness says so, and the readers reconnect by themselves
		case n < known:
			s.log.Warn("kafka topic has fewer partitions than when this gateway began reading it: was it recreated? Restart the gateway",
				"partitions", n, "was", known)
			known = n
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

// readPartitions starts reading partitions from to to-1 of the topic, from
// their oldest offset, into out, until ctx ends.
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
	var pcs []sarama.PartitionConsumer
	for p := from; p < to; p++ {
		pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
		if err != nil {
			for _, pc := range pcs {
				pc.AsyncClose()
			}
			_ = consumer.Close()
			_ = client.Close()
			return fmt.Errorf("kafka: partition %d: %w", p, err)
		}
		pcs = append(pcs, pc)
	}
	var partitions sync.WaitGroup
	for i, pc := range pcs {
		partitions.Go(func() { s.readPartition(ctx, from+int32(i), pc, out) })
	}
	readers.Go(func() {
		partitions.Wait()
		_ = consumer.Close() // closes what is left of the partition consumers
		_ = client.Close()
	})
	return nil
}

// readPartition hands the records of pc to out, one at a time: the next
// once the router acknowledged the last (a nacked one is handed over
// again), until ctx ends or Sarama gives up on the partition.
func (s *retryingSubscriber) readPartition(ctx context.Context, partition int32, pc sarama.PartitionConsumer, out chan<- *message.Message) {
	defer pc.AsyncClose()
	for {
		var rec *sarama.ConsumerMessage
		select {
		case rec = <-pc.Messages():
			if rec == nil {
				// Its offset went out of range (the topic was truncated or
				// recreated): as for the partitions watermill-kafka reads,
				// a restart is what brings it back.
				s.log.Error("kafka partition consumer ended; restart the gateway to read the partition again", "partition", partition)
				return
			}
		case <-ctx.Done():
			return
		}
		msg, _ := lenientUnmarshaler{}.Unmarshal(rec) // never fails
		msgCtx := withRecordPosition(ctx, rec)
		msg.SetContext(msgCtx)
		for {
			select {
			case out <- msg:
			case <-ctx.Done():
				return
			}
			select {
			case <-msg.Acked():
			case <-msg.Nacked():
				msg = msg.Copy()
				msg.SetContext(msgCtx)
				select {
				case <-time.After(nackResend):
				case <-ctx.Done():
					return
				}
				continue
			case <-ctx.Done():
				return
			}
			break
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
	partition, ok = kafka.MessagePartitionFromCtx(ctx)
	if !ok {
		return 0, 0, false
	}
	offset, ok = kafka.MessagePartitionOffsetFromCtx(ctx)
	return partition, offset, ok
}
