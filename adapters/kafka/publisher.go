package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/IBM/sarama"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
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
//   - A call sends the batch in waves with at most one record per project
//     (usually a single wave: a batch rarely holds two events of one
//     project), and stops at the first wave that fails. When the outbox
//     retries the batch, the retry skips what the broker already
//     acknowledged. So a failure part way neither duplicates an event nor
//     puts an older state of a project after a newer one.
//
// It is safe for concurrent use, but calls are serialized: the outbox loop
// is its only caller. Close does not wait for a pending Publish to run its
// course: it cuts the producer's connections, so the call fails at once.
type batchPublisher struct {
	brokers   []string
	conf      *sarama.Config
	dialer    *dialer // makes, and on Close cuts, the producer's connections
	marshaler wmkafka.Marshaler
	gate      <-chan struct{}
	log       *slog.Logger

	// mu is held by Publish and Close: Sarama panics on a message sent to
	// a closed producer.
	mu       sync.Mutex
	closed   bool
	client   sarama.Client
	producer sarama.SyncProducer
	// acked holds the UUIDs of messages acknowledged by a failed call.
	acked map[string]struct{}

	closeOnce sync.Once
	closeErr  error
}

// newBatchPublisher returns a publisher to brokers. It connects through a
// dialer of its own, set on conf.
func newBatchPublisher(brokers []string, conf *sarama.Config, m wmkafka.Marshaler, gate <-chan struct{}, log *slog.Logger) *batchPublisher {
	return &batchPublisher{brokers: brokers, conf: conf, dialer: useDialer(conf), marshaler: m, gate: gate, log: log, acked: map[string]struct{}{}}
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

	var waves [][]*sarama.ProducerMessage
	rejected := map[string]error{}
	perProject := map[string]int{}
	for _, msg := range msgs {
		if _, done := p.acked[msg.UUID]; done {
			continue
		}
		rec, err := p.marshal(topic, msg)
		if err != nil {
			rejected[msg.UUID] = err
			continue
		}
		project := msg.Metadata.Get(codec.MetadataProjectID)
		wave := perProject[project]
		perProject[project]++
		if wave == len(waves) {
			waves = append(waves, make([]*sarama.ProducerMessage, 0, len(msgs)-len(perProject)+1))
		}
		waves[wave] = append(waves[wave], rec)
	}
	for _, wave := range waves {
		if err = p.send(producer, wave, rejected); err != nil {
			if cerr := p.disconnect(); cerr != nil {
				p.log.Debug("closing the failed kafka producer", "error", cerr)
			}
			break
		}
	}
	if err == nil {
		clear(p.acked)
	}
	if len(rejected) > 0 {
		return &pubsub.RejectedError{Rejected: rejected, Temporary: err}
	}
	return err
}

// marshal returns the record of msg, with msg as its metadata.
func (p *batchPublisher) marshal(topic string, msg *message.Message) (*sarama.ProducerMessage, error) {
	rec, err := p.marshaler.Marshal(topic, msg)
	if err != nil {
		return nil, fmt.Errorf("kafka: cannot marshal message %s: %w", msg.UUID, err)
	}
	rec.Metadata = msg
	return rec, nil
}

// RecordSize returns the size of msg's record as the producer measures it
// against Producer.MaxMessageBytes (see pubsub.RecordSizer); a message that
// cannot be marshaled counts as 0 (publishing rejects it).
func (p *batchPublisher) RecordSize(msg *message.Message) int {
	rec, err := p.marshaler.Marshal("", msg)
	if err != nil {
		return 0
	}
	version := 1
	if p.conf.Version.IsAtLeast(sarama.V0_11_0_0) {
		version = 2
	}
	return rec.ByteSize(version)
}

// send sends one wave: at most one record per project, so whatever part of
// it fails, no record of a project can overtake an earlier one. It records
// the acknowledged records in acked, and those the broker (or the
// producer) refused for good in rejected. It fails when a record could not
// be published for a reason that may pass (the outbox retries).
//
// Waves exist because Sarama does not stop at the first failure: the
// records of one SendMessages call travel in several produce requests, and
// when an early request runs out of retries the producer bumps its epoch
// and lets the later ones through. Measured on kfake: a broker restart in
// the middle of a call put a project's newer events on the topic before
// its older ones.
//
// A broker refuses a whole batch of a partition for one bad record (too
// large for the topic's max.message.bytes, invalid, against a policy), and
// Sarama reports that error for every record of the batch. So when several
// records of a wave are refused for good, each is sent again alone: only
// those refused alone are rejected.
func (p *batchPublisher) send(producer sarama.SyncProducer, wave []*sarama.ProducerMessage, rejected map[string]error) error {
	failed, err := p.sendAll(producer, wave)
	if err != nil {
		return err
	}
	var suspects []*sarama.ProducerMessage
	var temporary error
	temporaries := 0
	for _, rec := range wave {
		ferr, bad := failed[rec]
		switch {
		case !bad:
			p.acked[rec.Metadata.(*message.Message).UUID] = struct{}{}
		case permanent(ferr):
			suspects = append(suspects, rec)
		default:
			temporary = ferr
			temporaries++
		}
	}
	if temporary != nil {
		return fmt.Errorf("kafka: %d of %d records not acknowledged: %w", temporaries, len(wave), temporary)
	}
	if len(suspects) == 1 {
		rejected[suspects[0].Metadata.(*message.Message).UUID] = failed[suspects[0]]
		return nil
	}
	for _, rec := range suspects {
		alone := &sarama.ProducerMessage{Topic: rec.Topic, Key: rec.Key, Value: rec.Value, Headers: rec.Headers, Metadata: rec.Metadata}
		failed, err := p.sendAll(producer, []*sarama.ProducerMessage{alone})
		if err != nil {
			return err
		}
		uuid := rec.Metadata.(*message.Message).UUID
		switch ferr, bad := failed[alone]; {
		case !bad:
			p.acked[uuid] = struct{}{}
		case permanent(ferr):
			rejected[uuid] = ferr
		default:
			return fmt.Errorf("kafka: a record not acknowledged: %w", ferr)
		}
	}
	return nil
}

// sendAll sends records and returns the error of each that failed.
func (p *batchPublisher) sendAll(producer sarama.SyncProducer, records []*sarama.ProducerMessage) (map[*sarama.ProducerMessage]error, error) {
	err := producer.SendMessages(records)
	var perrs sarama.ProducerErrors
	if err != nil && !errors.As(err, &perrs) {
		return nil, fmt.Errorf("kafka: produce: %w", err)
	}
	failed := make(map[*sarama.ProducerMessage]error, len(perrs))
	for _, e := range perrs {
		failed[e.Msg] = e.Err
	}
	return failed, nil
}

// permanent reports whether a record's produce error is for good: the
// broker, or the producer, refuses the record itself, so sending it again
// cannot succeed. Anything else (a broker down, a leader moving, a timeout,
// an error we do not know) may pass, and is retried.
func permanent(err error) bool {
	var conf sarama.ConfigurationError // the producer's own checks, such as Producer.MaxMessageBytes
	if errors.As(err, &conf) {
		return true
	}
	var kerr sarama.KError
	if !errors.As(err, &kerr) {
		return false
	}
	switch kerr {
	case sarama.ErrMessageSizeTooLarge, sarama.ErrMessageSetSizeTooLarge, sarama.ErrInvalidRecord,
		sarama.ErrInvalidTimestamp, sarama.ErrPolicyViolation, sarama.ErrTopicAuthorizationFailed,
		sarama.ErrInvalidTopic, sarama.ErrUnsupportedForMessageFormat:
		return true
	}
	return false
}

// connect returns the producer, creating it first if needed. The caller
// holds mu.
func (p *batchPublisher) connect() (sarama.SyncProducer, error) {
	if p.producer != nil {
		return p.producer, nil
	}
	// The client is created here, not by NewSyncProducer, because Sarama
	// leaks the client it creates when the producer then fails to start
	// (the idempotent producer's id request can fail on a flapping broker).
	client, err := sarama.NewClient(p.brokers, p.conf)
	if err != nil {
		return nil, fmt.Errorf("kafka: cannot connect the producer: %w", err)
	}
	producer, err := sarama.NewSyncProducerFromClient(client)
	if err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("kafka: cannot start the producer: %w", err)
	}
	p.client, p.producer = client, producer
	p.log.Info("kafka producer connected", "brokers", p.brokers)
	return producer, nil
}

// disconnect drops the producer after a failure; the next Publish connects
// afresh. A Sarama producer that failed keeps per-partition circuit
// breakers open for 10s after the brokers are back; a new one publishes as
// soon as a broker answers. The caller holds mu.
func (p *batchPublisher) disconnect() error {
	if p.producer == nil {
		return nil
	}
	err := errors.Join(p.producer.Close(), p.client.Close())
	p.client, p.producer = nil, nil
	return err
}

// Abort cuts the producer's connections: a Publish, or a Close, still
// under way fails at once. It implements pubsub.Aborter.
func (p *batchPublisher) Abort() { p.dialer.cut() }

// Close closes the producer. A pending Publish is not waited for: the
// caller (the outbox) has given up on it, and against a broker that
// accepts requests but never answers it would hold mu through Sarama's
// read timeouts and retries, tens of seconds. Close cuts its connections
// instead, so it fails at once (see dialer), then closes the producer.
// Idempotent; later calls return the first call's result.
func (p *batchPublisher) Close() error {
	p.closeOnce.Do(func() {
		// TryLock tells whether a Publish holds mu; a Publish that starts
		// after it finds the publisher closed.
		if !p.mu.TryLock() {
			p.dialer.cut()
			p.mu.Lock()
		}
		defer p.mu.Unlock()
		p.closed = true
		if err := p.disconnect(); err != nil {
			p.closeErr = fmt.Errorf("kafka: closing the producer: %w", err)
		}
		p.dialer.cut() // nothing left to cut: refuses later connections
	})
	return p.closeErr
}
