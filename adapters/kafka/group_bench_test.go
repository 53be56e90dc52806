package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// groupBenchRecords is how many records BenchmarkKafkaGroupConsumer reads
// per iteration.
const groupBenchRecords = 20_000

// BenchmarkKafkaGroupConsumer measures a consumer-group Bus reading a
// backlog: groupBenchRecords records over 1,000 projects are on a
// 4-partition topic before a new group starts from the oldest offset; one
// inbox subscribed to every project, with a reader that only counts. The
// rate is taken from the first event received to the last, so joining the
// group is not counted, over all the iterations.
func BenchmarkKafkaGroupConsumer(b *testing.B) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, pubsub.DefaultTopic),
		kfake.GroupMinSessionTimeout(100*time.Millisecond))
	require.NoError(b, err)
	defer cluster.Close()
	kcfg := Config{Brokers: cluster.ListenAddrs()}
	kcfg.setDefaults("")
	attached := make(chan struct{})
	close(attached)
	pub := newBatchPublisher(kcfg.Brokers, kcfg.sarama(roleProducer), newMarshaler(), attached, slog.New(slog.DiscardHandler))
	batch := make([]*message.Message, 0, 256)
	for n := range groupBenchRecords {
		batch = append(batch, testEvent(b, fmt.Sprintf("group-bench-%d", n%1000), n))
		if len(batch) == cap(batch) || n == groupBenchRecords-1 {
			require.NoError(b, pub.Publish(pubsub.DefaultTopic, batch...))
			batch = batch[:0]
		}
	}
	require.NoError(b, pub.Close())

	var reading time.Duration
	iteration := 0
	for b.Loop() {
		iteration++
		bus, err := New(pubsub.Config{}, Config{
			Brokers: kcfg.Brokers, ConsumerGroup: fmt.Sprintf("bench-%d", iteration), InitialOffset: OffsetOldest,
		}, nil)
		require.NoError(b, err)
		in, err := bus.NewInbox()
		require.NoError(b, err)
		require.NoError(b, in.SubscribeToAllProjects())
		var first time.Time
		deadline := time.After(2 * time.Minute)
		for n := range groupBenchRecords {
			select {
			case <-in.Events():
			case <-deadline:
				b.Fatalf("got %d of %d events", n, groupBenchRecords)
			}
			if n == 0 {
				first = time.Now()
			}
		}
		reading += time.Since(first)
		_ = in.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(b, bus.Close(ctx))
		cancel()
	}
	b.ReportMetric(float64(iteration*(groupBenchRecords-1))/reading.Seconds(), "events/s")
}
