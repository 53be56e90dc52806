package kafka_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log"
	"log/slog"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
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
func newKafkaBus(t *testing.T, brokers []string, cfg pubsub.Config, kcfg kafka.Config) *pubsub.Bus {
	t.Helper()
	kcfg.Brokers = brokers
	if kcfg.ReconnectBackoff == 0 {
		kcfg.ReconnectBackoff = 200 * time.Millisecond
	}
	bus, err := kafka.New(cfg, kcfg, testLogger())
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
	var scenarios atomic.Int32
	pubsubtest.TestBus(t, pubsubtest.Features{Name: "kafka", ManyEvents: 2_000, SlowSubscriberEvents: 3_000, Timeout: 20 * time.Second},
		func(t *testing.T) pubsubtest.Bus {
			// A topic per scenario: the scenarios run in parallel, and on a
			// shared topic every inbox would also queue the others'
			// thousands of events, enough to make a small inbox coalesce
			// where a scenario counts on getting everything.
			topic := fmt.Sprintf("contract-%d", scenarios.Add(1))
			createTopic(t, cluster, topic, testPartitions)
			return newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{InboxQueueSize: 1_000}, kafka.Config{Topic: topic})
		})
}

// adminClient returns a client for admin requests to the cluster, closed
// at the end of the test.
func adminClient(t *testing.T, cluster *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// createTopic creates a topic on the cluster.
func createTopic(t *testing.T, cluster *kfake.Cluster, name string, partitions int32) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	topic := kmsg.NewCreateTopicsRequestTopic()
	topic.Topic, topic.NumPartitions, topic.ReplicationFactor = name, partitions, 1
	req.Topics = append(req.Topics, topic)
	resp, err := req.RequestWith(context.Background(), adminClient(t, cluster))
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode), "creating topic %s", name)
}

// kafkaInbox returns an inbox of bus subscribed to every project.
func kafkaInbox(t *testing.T, bus *pubsub.Bus) ports.Inbox {
	t.Helper()
	in, err := bus.NewInbox()
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// nextEvent returns the next event of in, failing the test after timeout.
func nextEvent(t *testing.T, in ports.Inbox, timeout time.Duration) domain.Event {
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
		newKafkaBus(t, brokers, pubsub.Config{Metrics: metrics.New(regs[0], nil)}, kafka.Config{ClientID: "gateway-a"}),
		newKafkaBus(t, brokers, pubsub.Config{Metrics: metrics.New(regs[1], nil)}, kafka.Config{ClientID: "gateway-b"}),
	}
	inboxes := []ports.Inbox{kafkaInbox(t, buses[0]), kafkaInbox(t, buses[1])}
	awaitReady(t, buses...)
	project := func(bus, i int) domain.Project {
		return pubsubtest.Project(fmt.Sprintf("outage-%d-%d", bus, i%5), i)
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
				ev := nextEvent(t, in, 30*time.Second)
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
	stopped := time.Now()
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
	// STATUSBROADCASTER_OUTAGE=30s makes the outage last that long, to
	// measure recovery after the retries have backed off (BENCHMARKS.md).
	if d, err := time.ParseDuration(os.Getenv("STATUSBROADCASTER_OUTAGE")); err == nil {
		time.Sleep(time.Until(stopped.Add(d)))
	}

	restarted := time.Now()
	start(port)
	expect(10, 10+outageEvents)
	t.Logf("outage of %s: every event broadcast during it delivered to both gateways %s after the broker restarted",
		restarted.Sub(stopped).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
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

// counterValue returns a counter's value, summed over series whose label
// "reason" equals reason (any series when reason is "").
func counterValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					match = true
				}
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// kafkaRecords reads n records of the topic from its start.
func kafkaRecords(t *testing.T, brokers []string, n int) []*kgo.Record {
	return kafka.ReadTopic(t, brokers, pubsub.DefaultTopic, n)
}

func TestKafkaOrderPerProjectAcrossPartitionsWithConcurrentProducers(t *testing.T) {
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	const producers, projectsEach, events = 3, 4, 300 // events per project
	var buses []*pubsub.Bus
	for i := range producers {
		buses = append(buses, newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{ClientID: fmt.Sprintf("producer-%d", i)}))
	}
	gateway := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{ClientID: "gateway"})
	inboxes := []ports.Inbox{kafkaInbox(t, gateway), kafkaInbox(t, buses[0])}
	awaitReady(t, append(buses, gateway)...)

	var wg sync.WaitGroup
	for p, bus := range buses {
		wg.Go(func() {
			for n := range events {
				for j := range projectsEach {
					assert.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("order-%d-%d", p, j), n)))
				}
			}
		})
	}
	total := producers * projectsEach * events
	for g, in := range inboxes {
		next := map[string]int{}
		for range total {
			ev := nextEvent(t, in, 20*time.Second)
			var n int
			_, err := fmt.Sscanf(ev.Project.Name, "app-%d", &n)
			require.NoError(t, err)
			require.Equal(t, next[ev.Project.ID], n, "inbox %d, project %s: out of order", g, ev.Project.ID)
			next[ev.Project.ID]++
		}
		assert.Len(t, next, producers*projectsEach, "inbox %d gets every project", g)
	}
	wg.Wait()

	// On the topic: every event of a project on one partition, keyed by
	// the project id, the projects spread over several partitions.
	partitionOf := map[string]int32{}
	used := map[int32]bool{}
	for _, r := range kafkaRecords(t, brokers, total) {
		id := string(r.Key)
		if p, ok := partitionOf[id]; ok {
			require.Equal(t, p, r.Partition, "project %s on two partitions", id)
		}
		partitionOf[id] = r.Partition
		used[r.Partition] = true
	}
	assert.GreaterOrEqual(t, len(used), 3, "the projects spread over at least 3 partitions")
}

func TestKafkaRecordSchema(t *testing.T) {
	cluster := startKafka(t)
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, kafka.Config{})
	awaitReady(t, bus)
	p := pubsubtest.Project("schema-1", 1)
	p.Status = domain.StatusFailed
	require.NoError(t, bus.BroadcastProjectError(p, "Mix deps.get failed"))

	rec := kafkaRecords(t, cluster.ListenAddrs(), 1)[0]
	assert.Equal(t, "schema-1", string(rec.Key), "key = project id")
	// The key is hashed as the Java client (and franz-go) hash it, so
	// another producer's records of the project share its partition.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cl.Close()
	foreign, err := cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte("schema-1"), Value: []byte("{}")}).First()
	require.NoError(t, err)
	assert.Equal(t, rec.Partition, foreign.Partition, "same partition as a Java-compatible producer")

	ev, err := domain.NewProjectError(p, "Mix deps.get failed")
	require.NoError(t, err)
	want, err := codec.Encode(ev)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(rec.Value), "value = the envelope JSON, as SSE clients get it")
	assert.JSONEq(t, `{"event":"project_error","error":"Mix deps.get failed","project":{"id":"schema-1","name":"app-1","status":"failed",
		"code_repo":"https://github.com/user/schema-1","docs_repo":"https://github.com/user/schema-1_docs",
		"inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:00:00.001Z"}}`, string(rec.Value))
	headers := map[string]string{}
	for _, h := range rec.Headers {
		headers[h.Key] = string(h.Value)
	}
	id := headers["ce_id"]
	assert.NotEmpty(t, id)
	assert.Equal(t, map[string]string{
		"event_type": "project_error", "project_id": "schema-1", "topic": "projects:schema-1", "schema_version": "1",
		"ce_specversion": "1.0", "ce_id": id, "ce_source": "/statusbroadcaster", "ce_type": "statusbroadcaster.project_error",
		"ce_subject": "schema-1", "ce_time": headers["ce_time"], "content-type": "application/json",
		"_watermill_message_uuid": id,
	}, headers)
}

func TestKafkaBadRecordsAreCountedAndSkipped(t *testing.T) {
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	reg := prometheus.NewRegistry()
	bus := newKafkaBus(t, brokers, pubsub.Config{Metrics: metrics.New(reg, nil)}, kafka.Config{})
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)

	good := func(n int) *kgo.Record {
		ev, err := domain.NewProjectUpdated(pubsubtest.Project("bad-1", n))
		require.NoError(t, err)
		value, err := codec.Encode(ev)
		require.NoError(t, err)
		return &kgo.Record{Key: []byte("bad-1"), Value: value, Headers: []kgo.RecordHeader{
			{Key: "event_type", Value: []byte("project_updated")}, {Key: "project_id", Value: []byte("bad-1")},
		}}
	}
	withValue := func(value string, headers ...string) *kgo.Record {
		r := &kgo.Record{Key: []byte("bad-1"), Value: []byte(value)}
		for i := 0; i+1 < len(headers); i += 2 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: headers[i], Value: []byte(headers[i+1])})
		}
		return r
	}
	valid := string(good(0).Value)
	bad := []*kgo.Record{
		withValue("\x00\x01 not json at all", "event_type", "project_updated", "project_id", "bad-1"),
		withValue(strings.Replace(valid, "project_updated", "project_deleted", 1), "event_type", "project_deleted", "project_id", "bad-1"),
		withValue(strings.Replace(valid, `"id":"bad-1"`, `"id":"bad:1*"`, 1), "event_type", "project_updated", "project_id", "bad:1*"),
		withValue(valid), // no headers
		withValue(valid, "event_type", "project_updated", "project_id", "someone-else"),
		{Key: []byte("bad-1")}, // no value
	}
	// Foreign producers (franz-go here, any other client in production)
	// write good records with bad ones in between, on the project's
	// partition.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cl.Close()
	records := []*kgo.Record{good(0)}
	records = append(records, bad...)
	records = append(records, good(1), good(2))
	require.NoError(t, cl.ProduceSync(context.Background(), records...).FirstErr())
	// And the Bus itself goes on publishing.
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("bad-1", 3)))

	for n := range 4 {
		ev := nextEvent(t, in, 10*time.Second)
		assert.Equal(t, pubsubtest.Project("bad-1", n), ev.Project, "the stream goes on past the bad records")
	}
	assert.Equal(t, float64(len(bad)), counter(t, reg, "statusbroadcaster_bad_messages_total"))
}

func TestKafkaBackendConsumerGroup(t *testing.T) {
	cluster := startKafka(t, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	brokers := cluster.ListenAddrs()
	producer := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{})
	awaitReady(t, producer)
	broadcast := func(from, to int) {
		for n := from; n < to; n++ {
			require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project("billing-1", n)))
		}
	}
	receive := func(in ports.Inbox, from, to int) {
		for n := from; n < to; n++ {
			assert.Equal(t, pubsubtest.Project("billing-1", n), nextEvent(t, in, 20*time.Second).Project)
		}
	}
	// Published before the group ever ran: read from the oldest offset.
	broadcast(0, 10)
	group := kafka.Config{ConsumerGroup: "billing", InitialOffset: kafka.OffsetOldest}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := kafka.New(pubsub.Config{}, withBrokers(group, brokers), testLogger())
	require.NoError(t, err)
	in := kafkaInbox(t, first)
	receive(in, 0, 10)
	broadcast(10, 15)
	receive(in, 10, 15)
	require.NoError(t, first.Close(ctx), "closing commits the group's offsets")

	// While no member runs, events wait in Kafka; the next member of the
	// group resumes after the last event the group consumed.
	broadcast(15, 20)
	second := newKafkaBus(t, brokers, pubsub.Config{}, group)
	in2 := kafkaInbox(t, second)
	// Delivery is at least once: the last records the first member
	// acknowledged may not have been committed when it closed, and come
	// again — the latest ones, in order. Nothing before them does.
	ev := nextEvent(t, in2, 20*time.Second)
	for ev.Project != pubsubtest.Project("billing-1", 15) {
		var n int
		_, err := fmt.Sscanf(ev.Project.Name, "app-%d", &n)
		require.NoError(t, err)
		require.True(t, n >= 10 && n < 15, "only the tail of what the group consumed may come again, got %s", ev.Project.Name)
		ev = nextEvent(t, in2, 20*time.Second)
	}
	receive(in2, 16, 20)
}

func withBrokers(k kafka.Config, brokers []string) kafka.Config {
	k.Brokers = brokers
	return k
}

// deadAddress returns a local address nothing listens on.
func deadAddress(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestKafkaStartsWithoutBroker(t *testing.T) {
	addr := deadAddress(t)
	bus := newKafkaBus(t, []string{addr}, pubsub.Config{}, kafka.Config{})
	in := kafkaInbox(t, bus)
	for n := range 5 {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("late-1", n)), "broadcasts are queued")
	}
	require.Error(t, bus.Ready(context.Background()), "not ready without a broker")

	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	startKafka(t, kfake.Ports(p))
	// The gateway reads from the newest offset, yet gets its own events:
	// it publishes only once its consumer reads.
	for n := range 5 {
		assert.Equal(t, pubsubtest.Project("late-1", n), nextEvent(t, in, 20*time.Second).Project)
	}
	awaitReady(t, bus)
}

func TestKafkaCloseWithoutBrokerReportsUnpublishedEvents(t *testing.T) {
	bus, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: []string{deadAddress(t)}}, testLogger())
	require.NoError(t, err)
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("lost-1", 1)))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err = bus.Close(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Regexp(t, `0 queued events not published before the deadline, and 1 still being published|1 queued events not published`, err.Error(),
		"Close says the event was not published")
}

// closeWithin closes bus with a deadline and fails the test unless Close
// returns within limit: a generous liveness bound, not a timing.
func closeWithin(t *testing.T, bus *pubsub.Bus, deadline, limit time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- bus.Close(ctx) }()
	select {
	case err := <-closed:
		t.Logf("Close with a %s deadline returned after %s: %v", deadline, time.Since(start).Round(time.Millisecond), err)
		return err
	case <-time.After(limit):
		require.FailNow(t, "Close ignored its deadline", "still closing after %s, with a %s deadline", limit, deadline)
		return nil
	}
}

// A broker that accepts connections and never answers, from the start:
// the consumer's first attempt is under way when Close is called. Close
// keeps its deadline (it took 30s: the attempt held the router's lock
// through Sarama's timeouts, and Router.Close needs it), stops everything
// and leaves no connection behind.
func TestKafkaCloseWithHungBrokerAtStart(t *testing.T) {
	broker := pubsubtest.NewHungBroker(t)
	bus, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: []string{broker.Addr()}}, testLogger())
	require.NoError(t, err)
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("hung-start-1", 1)))
	require.Eventually(t, func() bool { return broker.Accepted() > 0 }, 5*time.Second, 5*time.Millisecond,
		"the consumer tries the broker")

	err = closeWithin(t, bus, time.Second, 3*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "1 queued events not published", "Close says the event was not published")
	assert.NotContains(t, err.Error(), "abandoned", "nothing was left stopping")
	require.Eventually(t, func() bool { return broker.Open() == 0 }, time.Second, 5*time.Millisecond,
		"every connection to the hung broker is closed: nothing waits on it any more")
}

// With a hung broker, the consumer's first attempt gives up within the
// probe timeout (2s; it took 30s), so the router runs and the Bus reports
// the consumer, not the router, as not ready; the consumer retries in the
// background, and Close still keeps its deadline.
func TestKafkaRouterRunsWithHungBroker(t *testing.T) {
	broker := pubsubtest.NewHungBroker(t)
	bus, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: []string{broker.Addr()}, ReconnectBackoff: 200 * time.Millisecond}, testLogger())
	require.NoError(t, err)
	var ready error
	require.Eventually(t, func() bool {
		ready = bus.Ready(context.Background())
		return ready != nil && strings.Contains(ready.Error(), "consumer not connected")
	}, 5*time.Second, 10*time.Millisecond, "the router runs, waiting for the consumer")

	err = closeWithin(t, bus, time.Second, 3*time.Second)
	require.NoError(t, err, "nothing was queued, and everything stopped")
	require.Eventually(t, func() bool { return broker.Open() == 0 }, time.Second, 5*time.Millisecond,
		"every connection to the hung broker is closed")
}

// The broker stops answering produce requests while a batch is being
// published. Close keeps its deadline (it took a minute: closing the
// publisher waited for the pending Publish through Sarama's timeouts and
// retries) and reports the event as lost.
func TestKafkaCloseWithBrokerThatStopsAnsweringProduce(t *testing.T) {
	cluster := startKafka(t)
	bus, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: cluster.ListenAddrs()}, testLogger())
	require.NoError(t, err)
	awaitReady(t, bus)
	produced := pubsubtest.SwallowProduce(cluster)
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("hung-produce-1", 1)))
	select {
	case <-produced:
	case <-time.After(10 * time.Second):
		require.FailNow(t, "the produce request never reached the broker")
	}

	err = closeWithin(t, bus, time.Second, 3*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "1 still being published", "Close says the event was not published")
	assert.NotContains(t, err.Error(), "abandoned", "the pending Publish was cut, not abandoned")
}

// A consumer group is closed gracefully (it commits its offsets), so a
// broker that stops answering after the group joined holds its Close up
// through Sarama's timeouts. Bus.Close abandons it at the deadline plus
// the grace, says so, and cuts its connections: the goroutines left
// behind end at once, not ~18s later. The router does not wait for it: it
// reads the consumer's messages through the retrying subscriber, which
// lets go as soon as the router stops.
func TestKafkaCloseAbandonsAConsumerGroupOnAHungBroker(t *testing.T) {
	cluster := startKafka(t, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	bus, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: cluster.ListenAddrs(), ConsumerGroup: "hung"}, testLogger())
	require.NoError(t, err)
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)
	// Ignore the goroutines that were there before, and the broker's.
	before := goleak.IgnoreCurrent()
	for _, key := range []kmsg.Key{kmsg.Fetch, kmsg.Metadata, kmsg.FindCoordinator, kmsg.JoinGroup, kmsg.SyncGroup,
		kmsg.Heartbeat, kmsg.OffsetFetch, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		cluster.ControlKey(int16(key), func(kmsg.Request) (kmsg.Response, error, bool) {
			cluster.KeepControl()
			return nil, nil, true // swallowed: never answered
		})
	}

	err = closeWithin(t, bus, 500*time.Millisecond, 3*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "abandoned after the deadline: closing the subscriber")
	assert.NotContains(t, err.Error(), "closing the router", "the router stopped in time")
	_ = in.Close()
	// The abandoned goroutines end at once, their connections cut; "at
	// once" still means Sarama's teardown on a busy machine, longer than
	// goleak's own retries (~0.4s), so give them a few seconds.
	leakOpts := []goleak.Option{before,
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer")}
	for deadline := time.Now().Add(5 * time.Second); goleak.Find(leakOpts...) != nil && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	goleak.VerifyNone(t, leakOpts...)
}

// Closing a Bus right after it starts, before its router has started the
// handler, is prompt and leaves no goroutine behind (goleak). Watermill's
// router makes that a trap: its Close can wait 5s for a handler that its
// Run cannot start meanwhile, and a Run whose Subscribe fails leaks.
func TestCloseRightAfterStart(t *testing.T) {
	cluster := startKafka(t)
	for _, tc := range []struct {
		name string
		new  func() (*pubsub.Bus, error)
	}{
		{"memory", func() (*pubsub.Bus, error) { return pubsub.NewInMemory(pubsub.Config{}, nil) }},
		{"kafka", func() (*pubsub.Bus, error) {
			return kafka.New(pubsub.Config{}, kafka.Config{Brokers: cluster.ListenAddrs()}, nil)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 {
				bus, err := tc.new()
				require.NoError(t, err)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				require.NoError(t, bus.Close(ctx))
				cancel()
				require.Less(t, time.Since(start), 3*time.Second, "Close is prompt")
			}
		})
	}
}

// selfSignedTLS returns a server config with a certificate for 127.0.0.1
// and a client config that trusts it.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return server, client
}

func TestKafkaOverTLSWithSASLPlain(t *testing.T) {
	serverTLS, clientTLS := selfSignedTLS(t)
	cluster := startKafka(t, kfake.TLS(serverTLS), kfake.EnableSASL(), kfake.Superuser("PLAIN", "statusd", "s3cret"))
	brokers := cluster.ListenAddrs()

	bus := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{TLS: clientTLS, SASL: &kafka.SASLConfig{User: "statusd", Password: "s3cret"}})
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("tls-1", 1)))
	assert.Equal(t, pubsubtest.Project("tls-1", 1), nextEvent(t, in, 10*time.Second).Project)

	wrong := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{TLS: clientTLS, SASL: &kafka.SASLConfig{User: "statusd", Password: "wrong"}})
	assert.Error(t, wrong.Ready(context.Background()), "a wrong password is not ready")
	plain := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{SASL: &kafka.SASLConfig{User: "statusd", Password: "s3cret"}})
	assert.Error(t, plain.Ready(context.Background()), "no TLS to a TLS listener is not ready")
}
