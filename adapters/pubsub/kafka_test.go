package pubsub_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// testPartitions is the partition count of the topic in every Kafka test:
// enough that projects spread over several partitions.
const testPartitions = 4

// startKafka starts an in-process Kafka broker (kfake: the Kafka protocol
// over real TCP) with the topic seeded, and stops it at the end of the test.
func startKafka(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(testPartitions, pubsub.DefaultTopic)}, opts...)
	c, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// testLogger logs to stderr when STATUSBROADCASTER_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("STATUSBROADCASTER_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newKafkaBus returns a Bus on the brokers, closed at the end of the test.
func newKafkaBus(t *testing.T, brokers []string, cfg pubsub.Config, kcfg pubsub.KafkaConfig) *pubsub.Bus {
	t.Helper()
	kcfg.Brokers = brokers
	if kcfg.ReconnectBackoff == 0 {
		kcfg.ReconnectBackoff = 200 * time.Millisecond
	}
	bus, err := pubsub.NewKafka(cfg, kcfg, testLogger())
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	})
	return bus
}

func TestKafkaContract(t *testing.T) {
	cluster := startKafka(t)
	pubsubtest.TestBus(t, pubsubtest.Features{Name: "kafka", ManyEvents: 2_000, SlowSubscriberEvents: 3_000, Timeout: 20 * time.Second},
		func(t *testing.T) pubsubtest.Bus {
			return newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{InboxQueueSize: 1_000}, pubsub.KafkaConfig{})
		})
}

// testProject returns a project record numbered n.
func testProject(id string, n int) domain.Project {
	ts := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	return domain.Project{
		ID: id, Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
		CodeRepo: "https://github.com/user/" + id, DocsRepo: "https://github.com/user/" + id + "_docs",
		InsertedAt: ts, UpdatedAt: ts.Add(time.Duration(n) * time.Millisecond),
	}
}

// subscribeAll returns an inbox of bus subscribed to every project.
func subscribeAll(t *testing.T, bus *pubsub.Bus) ports.Inbox {
	t.Helper()
	in, err := bus.NewInbox()
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// next returns the next event of in, failing the test after timeout.
func next(t *testing.T, in ports.Inbox, timeout time.Duration) domain.Event {
	t.Helper()
	select {
	case ev, ok := <-in.Events():
		require.True(t, ok, "inbox ended: %v", in.Err())
		return ev
	case <-time.After(timeout):
		require.FailNow(t, "no event", "waited %s", timeout)
	}
	panic("unreachable")
}
