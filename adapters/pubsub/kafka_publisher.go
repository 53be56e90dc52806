package pubsub

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/IBM/sarama"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
)

// errPublisherClosed is returned by Publish after Close.
var errPublisherClosed = errors.New("kafka: publisher closed")

// batchPublisher is a Watermill Publisher that sends all the messages of a
// Publish call in one go (Sarama's SyncProducer.SendMessages), so the
// producer packs them into as few produce requests as the partitions allow,
// and waits for all the acknowledgements at once. watermill-kafka's own
// Publisher sends one message and waits for its acknowledgement before it
// sends the next: a round trip per event (see BENCHMARKS.md for the
// difference). Messages are still marshaled by a watermill-kafka Marshaler.
//
// It differs from watermill-kafka's Publisher in three more ways the Bus
// needs:
//   - It connects lazily and again after a failed connection, so a Bus can
//     start while no broker answers; until then Publish fails and the
//     outbox retries.
//   - It publishes nothing until gate is closed (the Bus's own consumer
//     reads the topic), so a gateway reading from the newest offset sees
//     its own events even when it started during an outage.
//   - When a call fails part way, the outbox retries the same batch; the
//     retry skips what the broker already acknowledged, so a partial
//     failure neither duplicates an event nor brings an older state of a
//     project back after a newer one.
//
// It is safe for concurrent use, but calls are serialized: the outbox loop
// is its only caller. Close waits for a pending Publish to end, which the
// producer's retry budget bounds.
type batchPublisher struct {
	brokers   []string
	conf      *sarama.Config
	marshaler kafka.Marshaler
	gate      <-chan struct{}
	log       *slog.Logger

	// mu is held by Publish and Close: Sarama panics on a message sent to
	// a closed producer.
	mu       sync.Mutex
	closed   bool
	producer sarama.SyncProducer
	// acked holds the UUIDs of messages acknowledged by a failed call.
	acked map[string]struct{}
}

func newBatchPublisher(brokers []string, conf *sarama.Config, m kafka.Marshaler, gate <-chan struct{}, log *slog.Logger) *batchPublisher {
	return &batchPublisher{brokers: brokers, conf: conf, marshaler: m, gate: gate, log: log, acked: map[string]struct{}{}}
}

// Publish sends msgs to topic and returns when every one of them is
// acknowledged, or with an error naming how many were not.
func (p *batchPublisher) Publish(topic string, msgs ...*message.Message) error {
	if p.gate != nil {
		select {
		case <-p.gate:
		default:
			return errors.New("kafka: not publishing until the consumer reads the topic")
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errPublisherClosed
	}
	producer, err := p.connect()
	if err != nil {
		return err
	}

	records := make([]*sarama.ProducerMessage, 0, len(msgs))
	for _, msg := range msgs {
		if _, done := p.acked[msg.UUID]; done {
			continue
		}
		rec, err := p.marshaler.Marshal(topic, msg)
		if err != nil {
			return fmt.Errorf("kafka: cannot marshal message %s: %w", msg.UUID, err)
		}
		rec.Metadata = msg
		records = append(records, rec)
	}
	err = producer.SendMessages(records)
	if err == nil {
		clear(p.acked)
		return nil
	}
	var perrs sarama.ProducerErrors
	if !errors.As(err, &perrs) {
		return fmt.Errorf("kafka: produce: %w", err)
	}
	p.rememberAcked(records, perrs)
	return fmt.Errorf("kafka: %d of %d records not acknowledged: %w", len(perrs), len(records), perrs[0].Err)
}

// rememberAcked records which records of a failed call need no retry:
// those acknowledged before the first failure of their project. A record
// acknowledged after a failed one of the same project is sent again, so
// that the project's latest state is the last one on the topic.
func (p *batchPublisher) rememberAcked(records []*sarama.ProducerMessage, perrs sarama.ProducerErrors) {
	failed := make(map[*sarama.ProducerMessage]bool, len(perrs))
	for _, e := range perrs {
		failed[e.Msg] = true
	}
	blocked := map[string]bool{} // projects with a failed record so far
	for _, rec := range records {
		msg := rec.Metadata.(*message.Message)
		project := msg.Metadata.Get(codec.MetadataProjectID)
		if failed[rec] {
			blocked[project] = true
			continue
		}
		if !blocked[project] {
			p.acked[msg.UUID] = struct{}{}
		}
	}
}

// connect returns the producer, creating it first if needed. The caller
// holds mu.
func (p *batchPublisher) connect() (sarama.SyncProducer, error) {
	if p.producer != nil {
		return p.producer, nil
	}
	producer, err := sarama.NewSyncProducer(p.brokers, p.conf)
	if err != nil {
		return nil, fmt.Errorf("kafka: cannot connect the producer: %w", err)
	}
	p.producer = producer
	p.log.Info("kafka producer connected", "brokers", p.brokers)
	return producer, nil
}

// Close closes the producer after a pending Publish returns. Idempotent.
func (p *batchPublisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.producer == nil {
		return nil
	}
	if err := p.producer.Close(); err != nil {
		return fmt.Errorf("kafka: closing the producer: %w", err)
	}
	return nil
}
