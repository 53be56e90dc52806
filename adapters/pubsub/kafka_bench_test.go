package pubsub

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// BenchmarkKafkaPublish compares, on one kfake broker over TCP, the two
// ways the outbox can hand a batch of events to Kafka: watermill-kafka's
// Publisher, which sends each message and waits for its acknowledgement
// before the next, and batchPublisher, which sends a batch (in waves of
// one record per project) and waits for all the acknowledgements at once.
// Both use the same producer settings (acks=all, idempotent) and the same
// marshaler. Each Publish carries 256 events (the outbox's default
// BatchSize) spread over the given number of projects.
func BenchmarkKafkaPublish(b *testing.B) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, DefaultTopic))
	require.NoError(b, err)
	defer cluster.Close()
	kcfg := KafkaConfig{Brokers: cluster.ListenAddrs()}
	kcfg.setDefaults("")
	require.NoError(b, kcfg.Validate())

	publishers := []struct {
		name string
		new  func(b *testing.B) message.Publisher
	}{
		{"per-event", func(b *testing.B) message.Publisher {
			pub, err := kafka.NewPublisher(kafka.PublisherConfig{
				Brokers: kcfg.Brokers, Marshaler: newMarshaler(), OverwriteSaramaConfig: kcfg.sarama(roleProducer),
			}, watermill.NopLogger{})
			require.NoError(b, err)
			return pub
		}},
		{"batched", func(b *testing.B) message.Publisher {
			attached := make(chan struct{})
			close(attached)
			return newBatchPublisher(kcfg.Brokers, kcfg.sarama(roleProducer), newMarshaler(), attached, slog.New(slog.DiscardHandler))
		}},
	}
	const batchSize = 256
	for _, projects := range []int{1000, 16} {
		for _, p := range publishers {
			b.Run(fmt.Sprintf("projects=%d/%s", projects, p.name), func(b *testing.B) {
				pub := p.new(b)
				defer func() { require.NoError(b, pub.Close()) }()
				batch := make([]*message.Message, batchSize)
				n := 0
				for b.Loop() {
					for i := range batch {
						batch[i] = testEvent(b, fmt.Sprintf("bench-%d", n%projects), n)
						n++
					}
					if err := pub.Publish(DefaultTopic, batch...); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
			})
		}
	}
}
