package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmkafka "github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// BenchmarkKafkaPublish compares, on one kfake broker over TCP, the two
// ways the outbox can hand a batch of events to Kafka: watermill-kafka's
// Publisher, which sends each message and waits for its acknowledgement
// before the next, and batchPublisher, which sends a batch (in waves of
// one record per project) and waits for all the acknowledgements at once.
// Both use the same producer settings (acks=all, idempotent) and the same
// marshaler. Each Publish carries batch events (the outbox's BatchSize)
// spread over the given number of projects.
func BenchmarkKafkaPublish(b *testing.B) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, pubsub.DefaultTopic))
	require.NoError(b, err)
	defer cluster.Close()
	kcfg := Config{Brokers: cluster.ListenAddrs()}
	kcfg.setDefaults("")
	require.NoError(b, kcfg.Validate())

	publishers := []struct {
		name string
		new  func(b *testing.B) message.Publisher
	}{
		{"per-event", func(b *testing.B) message.Publisher {
			pub, err := wmkafka.NewPublisher(wmkafka.PublisherConfig{
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
	for _, bc := range []struct{ batchSize, projects int }{{64, 1000}, {256, 1000}, {256, 16}} {
		batchSize, projects := bc.batchSize, bc.projects
		for _, p := range publishers {
			b.Run(fmt.Sprintf("batch=%d/projects=%d/%s", batchSize, projects, p.name), func(b *testing.B) {
				pub := p.new(b)
				defer func() { require.NoError(b, pub.Close()) }()
				batch := make([]*message.Message, batchSize)
				n := 0
				for b.Loop() {
					for i := range batch {
						batch[i] = testEvent(b, fmt.Sprintf("bench-%d", n%projects), n)
						n++
					}
					if err := pub.Publish(pubsub.DefaultTopic, batch...); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
			})
		}
	}
}

// BenchmarkKafkaBusEndToEnd measures a gateway Bus on kfake from broadcast
// to inbox: outbox, batched produce, consumer, router, hub. Events cycle
// over 1,000 projects; at most 5,000 are in flight, so the outbox never
// fills up and coalesces.
func BenchmarkKafkaBusEndToEnd(b *testing.B) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, pubsub.DefaultTopic))
	require.NoError(b, err)
	defer cluster.Close()
	bus, err := New(pubsub.Config{}, Config{Brokers: cluster.ListenAddrs()}, nil)
	require.NoError(b, err)
	defer func() { require.NoError(b, bus.Close(context.Background())) }()
	in, err := bus.NewInbox()
	require.NoError(b, err)
	require.NoError(b, in.SubscribeToAllProjects())
	var received atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range in.Events() {
			received.Add(1)
		}
	}()
	defer func() { _ = in.Close(); <-done }()
	for bus.Ready(context.Background()) != nil {
		time.Sleep(10 * time.Millisecond)
	}

	ts := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	for b.Loop() {
		p := domain.Project{ID: fmt.Sprintf("e2e-%d", n%1000), Name: "app", Status: domain.StatusCompiling, UpdatedAt: ts}
		if err := bus.BroadcastProjectUpdate(p); err != nil {
			b.Fatal(err)
		}
		n++
		for n-int(received.Load()) > 5_000 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	for int(received.Load()) < n {
		time.Sleep(100 * time.Microsecond)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
}
