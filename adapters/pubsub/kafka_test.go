package pubsub_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
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

func init() {
	if os.Getenv("STATUSBROADCASTER_TEST_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
}

// testLogger logs to stderr when STATUSBROADCASTER_TEST_LOG is set (Sarama
// too).
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

// awaitReady waits until bus reads the topic: a gateway reads from the
// newest offset, so it sees the events published after it is ready.
func awaitReady(t *testing.T, buses ...*pubsub.Bus) {
	t.Helper()
	for _, bus := range buses {
		require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 10*time.Second, 10*time.Millisecond,
			"the bus becomes ready")
	}
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

// outageEvents is how many events each gateway broadcasts while the broker
// is down.
const outageEvents = 200

func TestKafkaBrokerOutageDeliversEverythingInOrderAfterwards(t *testing.T) {
	dir := t.TempDir()
	var cluster *kfake.Cluster
	t.Cleanup(func() { cluster.Close() }) // after the buses (cleanups run last-in first-out)
	start := func(port int) {
		var err error
		cluster, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir),
			kfake.SeedTopics(testPartitions, pubsub.DefaultTopic))
		require.NoError(t, err)
	}
	start(0)
	brokers := cluster.ListenAddrs()
	_, portText, err := net.SplitHostPort(brokers[0])
	require.NoError(t, err)
	port, err := strconv.Atoi(portText)
	require.NoError(t, err)

	// Two gateways, each broadcasting its own projects; each must receive
	// every event of both.
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	buses := []*pubsub.Bus{
		newKafkaBus(t, brokers, pubsub.Config{Metrics: metrics.New(regs[0], nil)}, pubsub.KafkaConfig{ClientID: "gateway-a"}),
		newKafkaBus(t, brokers, pubsub.Config{Metrics: metrics.New(regs[1], nil)}, pubsub.KafkaConfig{ClientID: "gateway-b"}),
	}
	inboxes := []ports.Inbox{subscribeAll(t, buses[0]), subscribeAll(t, buses[1])}
	awaitReady(t, buses...)
	project := func(bus, i int) domain.Project {
		return testProject(fmt.Sprintf("outage-%d-%d", bus, i%5), i)
	}
	// expect reads every inbox until it has the events [from, to) of both
	// buses, each project in order, nothing twice.
	expect := func(from, to int) {
		t.Helper()
		for g, in := range inboxes {
			want := map[string]int{}
			for b := range buses {
				for i := from; i < min(from+5, to); i++ {
					want[project(b, i).ID] = i
				}
			}
			for range 2 * (to - from) {
				ev := next(t, in, 30*time.Second)
				n, ok := want[ev.Project.ID]
				require.True(t, ok, "gateway %d: unexpected project %s", g, ev.Project.ID)
				require.Equal(t, project(0, n).Name, ev.Project.Name, "gateway %d, project %s: out of order, missing or duplicated", g, ev.Project.ID)
				want[ev.Project.ID] = n + 5
			}
		}
	}
	for i := range 10 {
		for b, bus := range buses {
			require.NoError(t, bus.BroadcastProjectUpdate(project(b, i)))
		}
	}
	expect(0, 10)
	for _, bus := range buses {
		require.NoError(t, bus.Ready(context.Background()))
	}

	cluster.Close()
	for _, bus := range buses {
		require.Eventually(t, func() bool { return bus.Ready(context.Background()) != nil }, 10*time.Second, 50*time.Millisecond,
			"Ready reports the broker down")
	}
	// The broker stays down until every broadcast call has returned: a call
	// that waited for the broker would hang the test.
	var slowest time.Duration
	for i := 10; i < 10+outageEvents; i++ {
		for b, bus := range buses {
			began := time.Now()
			require.NoError(t, bus.BroadcastProjectUpdate(project(b, i)))
			slowest = max(slowest, time.Since(began))
		}
	}
	t.Logf("slowest broadcast call during the outage: %s", slowest)
	for _, reg := range regs { // publishing fails and will be retried
		require.Eventually(t, func() bool { return counter(t, reg, "statusbroadcaster_events_failed_total") > 0 }, 20*time.Second, 10*time.Millisecond)
	}

	restarted := time.Now()
	start(port)
	expect(10, 10+outageEvents)
	t.Logf("every event broadcast during the outage delivered to both gateways %s after the broker restarted", time.Since(restarted).Round(time.Millisecond))
	for _, bus := range buses {
		require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 10*time.Second, 50*time.Millisecond,
			"Ready reports the broker back")
	}

	// The stream goes on, with nothing replayed.
	for i := 10 + outageEvents; i < 20+outageEvents; i++ {
		for b, bus := range buses {
			require.NoError(t, bus.BroadcastProjectUpdate(project(b, i)))
		}
	}
	expect(10+outageEvents, 20+outageEvents)
}

// counter returns the value of a counter without labels in reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
