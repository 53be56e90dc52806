package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// deleteTopic deletes a topic of the cluster.
func deleteTopic(t *testing.T, cluster *kfake.Cluster, name string) {
	t.Helper()
	req := kmsg.NewPtrDeleteTopicsRequest()
	rt := kmsg.NewDeleteTopicsRequestTopic()
	rt.Topic = kmsg.StringPtr(name)
	req.Topics = append(req.Topics, rt)
	req.TopicNames = append(req.TopicNames, name)
	req.TimeoutMillis = 5000
	resp, err := req.RequestWith(context.Background(), adminClient(t, cluster))
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode), "deleting topic %s", name)
}

// A topic deleted and recreated under a running gateway: the new topic's
// offsets start again from 0, below what the gateway dispatched. The
// gateway notices (the partition's log now ends below what it dispatched),
// logs it, counts it, and delivers the new records. (It used to skip them
// all as repeats until the new offsets passed the old ones: here, ~100
// records per partition.)
func TestKafkaGatewayDeliversAfterTheTopicIsRecreated(t *testing.T) {
	cluster := startKafka(t)
	const topic = "recreated"
	createTopic(t, cluster, topic, testPartitions)
	reg := prometheus.NewRegistry()
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{Metrics: metrics.New(reg, nil)},
		kafka.Config{Topic: topic, ReconnectBackoff: 100 * time.Millisecond})
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)
	const before = 400
	for n := range before {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("before-%d", n%40), n)))
	}
	for range before {
		nextEvent(t, in, 20*time.Second)
	}

	deleteTopic(t, cluster, topic)
	createTopic(t, cluster, topic, testPartitions)
	recreated := time.Now()
	// The gateway reads from the newest offset once its consumer is back:
	// probe until an event comes through.
	probe := 0
	got := make(chan domain.Event, 1)
	go func() {
		ev, ok := <-in.Events()
		if ok {
			got <- ev
		}
		close(got)
	}()
	var first domain.Event
	for waiting := true; waiting; {
		require.Less(t, time.Since(recreated), 30*time.Second, "no event after the topic was recreated")
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("probe-%d", probe%40), probe)))
		probe++
		select {
		case ev, ok := <-got:
			require.True(t, ok, "inbox ended: %v", in.Err())
			first, waiting = ev, false
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Logf("first event %s %s after the topic was recreated (%d probes)", first.Project.ID, time.Since(recreated).Round(time.Millisecond), probe)
	// Every event from now on arrives, in order per project (probes still
	// on their way come first).
	for n := range 40 {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("after-%d", n), n)))
	}
	afters := 0
	for afters < 40 {
		ev := nextEvent(t, in, 20*time.Second)
		if strings.HasPrefix(ev.Project.ID, "after-") {
			assert.Equal(t, fmt.Sprintf("after-%d", pubsubtest.Seq(ev)), ev.Project.ID)
			afters++
		}
	}
	assert.GreaterOrEqual(t, counterValue(t, reg, "statusbroadcaster_offset_anomalies_total", "backwards"), 1.0, "counted")
}

// The same for a consumer group: after the topic is recreated, the group's
// member reads the new partitions from their start, and the Bus delivers
// their records although their offsets are below what it dispatched. (It
// used to deliver none of them: nothing in 40s.)
func TestKafkaConsumerGroupDeliversAfterTheTopicIsRecreated(t *testing.T) {
	cluster := groupCluster(t)
	const topic = "group-recreated"
	createTopic(t, cluster, topic, testPartitions)
	producer := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, kafka.Config{Topic: topic})
	awaitReady(t, producer)
	reg := prometheus.NewRegistry()
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{Metrics: metrics.New(reg, nil)},
		kafka.Config{Topic: topic, ConsumerGroup: "recreated", InitialOffset: kafka.OffsetOldest})
	in := kafkaInbox(t, bus)
	const before = 400
	for n := range before {
		require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("before-%d", n%40), n)))
	}
	for range before {
		nextEvent(t, in, 20*time.Second)
	}
	deleteTopic(t, cluster, topic)
	createTopic(t, cluster, topic, testPartitions)
	recreated := time.Now()
	for n := range 40 {
		require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("after-%d", n), n)))
	}
	got := map[string]bool{}
	for len(got) < 40 {
		ev := nextEvent(t, in, 30*time.Second)
		require.True(t, strings.HasPrefix(ev.Project.ID, "after-"), "nothing from before the recreation again: %s", ev.Project.ID)
		assert.Equal(t, fmt.Sprintf("after-%d", pubsubtest.Seq(ev)), ev.Project.ID)
		got[ev.Project.ID] = true
		if len(got) == 1 {
			t.Logf("first event %s after the topic was recreated", time.Since(recreated).Round(time.Millisecond))
		}
	}
	assert.GreaterOrEqual(t, counterValue(t, reg, "statusbroadcaster_offset_anomalies_total", "backwards"), 1.0, "counted")
}

// A recreated topic where one partition had never held a record: that
// partition's consumer carries on (its offset, 0, is still valid), so
// watermill-kafka does not reconnect, and the consumers of the others have
// ended (their offsets are out of range). The gateway's partition check
// sees those partitions' logs end below what it dispatched and reads them
// itself. (They used to stay silent until the gateway restarted.)
func TestKafkaGatewayReadsEveryPartitionOfARecreatedTopic(t *testing.T) {
	cluster := startKafka(t)
	const topic = "recreated-partly"
	createTopic(t, cluster, topic, testPartitions)
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{},
		kafka.Config{Topic: topic, ReconnectBackoff: 100 * time.Millisecond, PartitionCheck: 100 * time.Millisecond})
	in := kafkaInbox(t, bus)
	awaitReady(t, bus)
	producer := manualProducer(t, cluster, topic)
	var records []*kgo.Record // 100 on each of partitions 0 to 2; partition 3 stays empty
	for n := range 300 {
		p := int32(n % 3)
		records = append(records, eventRecord(t, fmt.Sprintf("partly-%d", p), n, p, time.Now()))
	}
	require.NoError(t, producer.ProduceSync(context.Background(), records...).FirstErr())
	for range 300 {
		nextEvent(t, in, 20*time.Second)
	}

	deleteTopic(t, cluster, topic)
	createTopic(t, cluster, topic, testPartitions)
	recreated := time.Now()
	after := manualProducer(t, cluster, topic)
	// Every partition gets a record every 20ms until the gateway has one
	// from each.
	got := map[int32]bool{}
	for n := 0; len(got) < testPartitions; n++ {
		require.Less(t, time.Since(recreated), 30*time.Second, "partitions heard from after the recreation: %v", got)
		for p := range int32(testPartitions) {
			require.NoError(t, after.ProduceSync(context.Background(), eventRecord(t, fmt.Sprintf("after-%d", p), n, p, time.Now())).FirstErr())
		}
		deadline := time.After(20 * time.Millisecond)
	drain:
		for {
			select {
			case ev := <-in.Events():
				var p int32
				if _, err := fmt.Sscanf(ev.Project.ID, "after-%d", &p); err == nil {
					got[p] = true
				}
			case <-deadline:
				break drain
			}
		}
	}
	t.Logf("every partition heard from %s after the recreation", time.Since(recreated).Round(time.Millisecond))
}
