package kafka

import (
	"context"
	"time"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill/message"
)

// historyFill reads the tail of the topic into the gateway's history when
// it starts, before it reports ready, so that a gateway just (re)started
// resumes the ids other gateways, or its former self, gave out.
type historyFill struct {
	records   int // at most this many records, spread evenly over the partitions
	timeout   time.Duration
	newClient func() (sarama.Client, error)
	done      chan struct{} // closed once the fill is over (or given up)
}

// fillHistory reads, for each of the topic's first partitions, its last
// records (records/partitions of them) up to the newest offset as it is
// now, and hands them to out in order, one at a time, as the consumer
// does. It reads at least from until[p], the partition's newest offset
// just before the consumer began (so more than its share where records
// arrived meanwhile): the records the consumer then delivers overlap what
// the fill read, and none fall between; the Bus skips the overlap as
// repeats. A
// fill that fails or runs out of time is logged and given up: the history
// then holds less, and ids beyond it get the snapshot.
func (s *retryingSubscriber) fillHistory(ctx context.Context, topic string, partitions int, until []int64, out chan<- *message.Message) {
	f := s.fill
	defer close(f.done)
	if f.records <= 0 || partitions <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	start := time.Now()
	read, err := s.fill.read(ctx, topic, partitions, until, out)
	if err != nil || ctx.Err() != nil {
		if s.life.Err() == nil {
			s.log.Warn("kafka history fill given up: ids older than what was read get the snapshot",
				"error", err, "records", read, "after", time.Since(start).Round(time.Millisecond))
		}
		return
	}
	s.log.Info("kafka history filled from the topic", "records", read, "partitions", partitions,
		"took", time.Since(start).Round(time.Millisecond))
}

// over reports whether the fill has run (or was given up).
func (f *historyFill) over() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// newestOffsets returns the newest offset of each of the topic's first
// partitions, or nil if the brokers do not say (the fill then reads its
// share of each partition only).
func (f *historyFill) newestOffsets(topic string, partitions int) []int64 {
	client, err := f.newClient()
	if err != nil {
		return nil
	}
	defer func() { _ = client.Close() }()
	newest := make([]int64, partitions)
	for p := range int32(partitions) {
		if newest[p], err = client.GetOffset(topic, p, sarama.OffsetNewest); err != nil {
			return nil
		}
	}
	return newest
}

func (f *historyFill) read(ctx context.Context, topic string, partitions int, until []int64, out chan<- *message.Message) (int, error) {
	client, err := f.newClient()
	if err != nil {
		return 0, err
	}
	defer func() { _ = client.Close() }()
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return 0, err
	}
	defer func() { _ = consumer.Close() }()
	per := int64((f.records + partitions - 1) / partitions)
	read := 0
	for p := range int32(partitions) {
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return read, err
		}
		oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
		if err != nil {
			return read, err
		}
		from := max(oldest, newest-per)
		if int(p) < len(until) {
			from = max(oldest, min(from, until[p])) // nothing between the fill and the consumer
		}
		if from >= newest {
			continue
		}
		pc, err := consumer.ConsumePartition(topic, p, from)
		if err != nil {
			return read, err
		}
		n, ok := consume(ctx, pc, out, newest)
		read += n
		_ = pc.Close()
		if !ok {
			return read, ctx.Err()
		}
	}
	return read, nil
}
