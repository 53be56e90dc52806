package kafka_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// watermill-kafka's consumer without a group reads the topic's partition
// list once, when it starts: on its own a gateway never reads a partition
// added later (measured: nothing from the new partitions in 10s). The
// gateway checks the partition count and reads the new partitions itself,
// from their first record, in order. Traffic on the old partitions goes on
// undisturbed, in order, nothing lost, nothing twice, and nothing from
// before the gateway started is replayed.
func TestKafkaGatewayReadsPartitionsAddedLater(t *testing.T) {
	const topic = "growing"
	cluster := startKafka(t)
	createTopic(t, cluster, topic, 2)
	newProducer := func() *kgo.Client { return manualProducer(t, cluster, topic) }
	producer := newProducer()
	produceWith := func(producer *kgo.Client, id string, n int, partition int32, at time.Time) {
		require.NoError(t, producer.ProduceSync(context.Background(), eventRecord(t, id, n, partition, at)).FirstErr())
	}
	produce := func(id string, n int, partition int32, at time.Time) { produceWith(producer, id, n, partition, at) }
	// History from before the gateway started: it reads from the newest
	// offset, so it never sends this to anyone.
	produce("history", 0, 0, time.Now())
	produce("history", 1, 1, time.Now())

	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, kafka.Config{Topic: topic, PartitionCheck: 100 * time.Millisecond})
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)

	// Steady traffic on partition 0 from before the switch to after it.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	steady := 0
	wg.Go(func() {
		for ; ; steady++ {
			select {
			case <-stop:
				return
			default:
			}
			produce("steady", steady, 0, time.Now())
			time.Sleep(2 * time.Millisecond)
		}
	})
	time.Sleep(100 * time.Millisecond)

	addPartitions(t, cluster, topic, 4)
	added := time.Now()
	grown := newProducer() // one that knows the new partitions
	const fresh = 5        // on each new partition, before the gateway notices it
	for n := range fresh {
		produceWith(grown, "fresh-2", n, 2, time.Now())
		produceWith(grown, "fresh-3", n, 3, time.Now())
	}

	got := map[string][]int{}
	var lastSteady time.Time
	var longestGap time.Duration // between two steady events
	receive := func() {
		ev := nextEvent(t, in, 10*time.Second)
		got[ev.Project.ID] = append(got[ev.Project.ID], pubsubtest.Seq(ev))
		if ev.Project.ID == "steady" {
			if !lastSteady.IsZero() {
				longestGap = max(longestGap, time.Since(lastSteady))
			}
			lastSteady = time.Now()
		}
	}
	// until receives until done says so; a stream of steady events must
	// not keep it waiting for ever.
	until := func(what string, done func() bool) {
		for deadline := time.Now().Add(10 * time.Second); !done(); {
			require.True(t, time.Now().Before(deadline), "%s never arrived; got %d steady events", what, len(got["steady"]))
			receive()
		}
	}
	until("the new partitions' records", func() bool { return len(got["fresh-2"]) >= fresh && len(got["fresh-3"]) >= fresh })
	t.Logf("the records on the new partitions arrived %s after the partitions were added", time.Since(added).Round(time.Millisecond))
	// The old partitions are still read: one that had been quiet...
	produce("late-1", 0, 1, time.Now())
	until("late-1", func() bool { return len(got["late-1"]) > 0 })
	// ...and the new ones go on.
	produceWith(grown, "fresh-2", fresh, 2, time.Now())
	close(stop)
	wg.Wait()
	produce("steady", steady, 0, time.Now()) // the last one
	until("the last steady event", func() bool { return len(got["steady"]) > 0 && got["steady"][len(got["steady"])-1] == steady })
	until("the last fresh-2", func() bool { return len(got["fresh-2"]) > fresh })

	assert.Equal(t, []int{0, 1, 2, 3, 4, 5}, got["fresh-2"], "a new partition: from its first record, in order, once")
	assert.Equal(t, []int{0, 1, 2, 3, 4}, got["fresh-3"], "a new partition: from its first record, in order, once")
	assert.Equal(t, []int{0}, got["late-1"], "an old partition: once")
	assert.NotContains(t, got, "history", "a record from before the gateway started is not replayed")
	s := got["steady"]
	require.NotEmpty(t, s)
	for i := 1; i < len(s); i++ {
		require.Equal(t, s[i-1]+1, s[i], "steady traffic on an old partition: in order, nothing lost, nothing twice")
	}
	t.Logf("%d steady events while the partitions were added, from %d to %d; longest wait between two: %s",
		len(s), s[0], s[len(s)-1], longestGap.Round(time.Millisecond))
}

// manualProducer returns a client producing to topic, on the partition
// each record names. A client knows the partitions that were there when it
// started.
func manualProducer(t *testing.T, cluster *kfake.Cluster, topic string) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return cl
}

// eventRecord returns the record of event n of project id, as another
// producer would write it, on partition, stamped at (now when zero).
func eventRecord(t *testing.T, id string, n int, partition int32, at time.Time) *kgo.Record {
	t.Helper()
	ev, err := domain.NewProjectUpdated(pubsubtest.Project(id, n))
	require.NoError(t, err)
	value, err := codec.Encode(ev)
	require.NoError(t, err)
	return &kgo.Record{Key: []byte(id), Value: value, Partition: partition, Timestamp: at, Headers: []kgo.RecordHeader{
		{Key: "event_type", Value: []byte("project_updated")}, {Key: "project_id", Value: []byte(id)},
	}}
}

// addPartitions grows a topic to count partitions.
func addPartitions(t *testing.T, cluster *kfake.Cluster, topic string, count int32) {
	t.Helper()
	req := kmsg.NewPtrCreatePartitionsRequest()
	rt := kmsg.NewCreatePartitionsRequestTopic()
	rt.Topic, rt.Count = topic, count
	req.Topics = append(req.Topics, rt)
	req.TimeoutMillis = 5000
	resp, err := req.RequestWith(context.Background(), adminClient(t, cluster))
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode), "adding partitions to %s", topic)
}

// A consumer group needs no watch of its own: Sarama rebalances the group when its
// metadata (refreshed every PartitionCheck) shows more partitions, and
// the new assignment includes them. A group reading from the oldest
// offset gets what was written to the new partitions before it noticed
// them; the records it is handed again by the rebalance (read, not yet
// committed) are skipped.
func TestKafkaConsumerGroupReadsPartitionsAddedLater(t *testing.T) {
	const topic = "growing-group"
	cluster := startKafka(t, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	createTopic(t, cluster, topic, 2)
	produce := func(cl *kgo.Client, id string, n int, partition int32) {
		require.NoError(t, cl.ProduceSync(context.Background(), eventRecord(t, id, n, partition, time.Time{})).FirstErr())
	}
	newProducer := func() *kgo.Client { return manualProducer(t, cluster, topic) }
	producer := newProducer()
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, kafka.Config{Topic: topic, ConsumerGroup: "growing",
		InitialOffset: kafka.OffsetOldest, PartitionCheck: 100 * time.Millisecond})
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)

	var steady []int
	for n := range 20 {
		produce(producer, "steady", n, 0)
	}
	for len(steady) < 20 {
		steady = append(steady, pubsubtest.Seq(nextEvent(t, in, 10*time.Second)))
	}
	addPartitions(t, cluster, topic, 3)
	added := time.Now()
	produce(newProducer(), "fresh-2", 0, 2)
	for n := 20; n < 40; n++ {
		produce(producer, "steady", n, 0)
	}
	fresh := 0
	for fresh == 0 || len(steady) < 40 {
		ev := nextEvent(t, in, 20*time.Second)
		if ev.Project.ID == "fresh-2" {
			fresh++
			t.Logf("the record on the new partition arrived %s after the partition was added", time.Since(added).Round(time.Millisecond))
			continue
		}
		steady = append(steady, pubsubtest.Seq(ev))
	}
	for i := range steady {
		require.Equal(t, i, steady[i], "in order, nothing lost, nothing twice")
	}
	select {
	case ev := <-in.Events():
		assert.Fail(t, "nothing more", "got %s %d", ev.Project.ID, pubsubtest.Seq(ev))
	case <-time.After(300 * time.Millisecond):
	}
}
