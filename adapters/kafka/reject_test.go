package kafka_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// An event whose record would exceed MaxMessageBytes (default 1 MiB, the
// Kafka producer's) is rejected when it is broadcast, in memory as with
// Kafka, with ErrInvalidEvent and a message that says why. (It used to be
// queued, and the Kafka producer refused it at every attempt: the outbox
// retried it forever and every later event waited behind it.)
func TestBroadcastRejectsAnEventOverMaxMessageBytes(t *testing.T) {
	cluster := startKafka(t)
	huge := strings.Repeat("x", pubsub.DefaultMaxMessageBytes) // a build log
	buses := map[string]*pubsub.Bus{
		"memory": newInMemory(t, pubsub.Config{}),
		"kafka":  newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, kafka.Config{}),
	}
	for name, bus := range buses {
		t.Run(name, func(t *testing.T) {
			in := kafkaInbox(t, bus)
			awaitReady(t, bus)
			p := pubsubtest.Project("huge-"+name, 1)
			err := bus.BroadcastProjectError(p, huge)
			require.ErrorIs(t, err, domain.ErrInvalidEvent)
			assert.Contains(t, err.Error(), "over the limit of 1048576 bytes")
			assert.Contains(t, err.Error(), p.ID)
			// Just under the limit goes through, and so does what follows.
			require.NoError(t, bus.BroadcastProjectError(p, huge[:pubsub.DefaultMaxMessageBytes-2_000]))
			require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("huge-"+name, 2)))
			ev := nextEvent(t, in, 20*time.Second)
			assert.Len(t, ev.Error, pubsub.DefaultMaxMessageBytes-2_000)
			assert.Equal(t, pubsubtest.Project("huge-"+name, 2), nextEvent(t, in, 20*time.Second).Project)
		})
	}
	// A lower limit of the Kafka producer is the Bus's limit.
	small := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, kafka.Config{MaxMessageBytes: 4_096})
	require.ErrorIs(t, small.BroadcastProjectError(pubsubtest.Project("huge-small", 1), huge[:5_000]), domain.ErrInvalidEvent)
	require.NoError(t, small.BroadcastProjectError(pubsubtest.Project("huge-small", 1), huge[:3_000]))
}

// newInMemory returns an in-memory Bus, closed at the end of the test: the
// baseline the Kafka Bus is compared with.
func newInMemory(t *testing.T, cfg pubsub.Config) *pubsub.Bus {
	t.Helper()
	bus, err := pubsub.NewInMemory(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	})
	return bus
}

// createTopicWithConfig creates a topic with topic-level configs.
func createTopicWithConfig(t *testing.T, cluster *kfake.Cluster, name string, partitions int32, configs map[string]string) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	topic := kmsg.NewCreateTopicsRequestTopic()
	topic.Topic, topic.NumPartitions, topic.ReplicationFactor = name, partitions, 1
	for k, v := range configs {
		c := kmsg.NewCreateTopicsRequestTopicConfig()
		c.Name, c.Value = k, kmsg.StringPtr(v)
		topic.Configs = append(topic.Configs, c)
	}
	req.Topics = append(req.Topics, topic)
	resp, err := req.RequestWith(context.Background(), adminClient(t, cluster))
	require.NoError(t, err)
	require.Len(t, resp.Topics, 1)
	require.NoError(t, kerr.ErrorForCode(resp.Topics[0].ErrorCode), "creating topic %s", name)
}

// broadcastRejectScenario broadcasts, in one batch (before the Bus reads
// the topic, so the outbox holds them all), a0 b0 a1 b1 a2 b2 where a1
// carries reason, and checks that the inbox gets every other event, in
// order, and that one event was dropped as rejected.
func broadcastRejectScenario(t *testing.T, bus *pubsub.Bus, reg *prometheus.Registry, prefix, reason string) {
	t.Helper()
	a, b := prefix+"-a", prefix+"-b"
	in := kafkaInbox(t, bus)
	for n := range 3 {
		if n == 1 {
			require.NoError(t, bus.BroadcastProjectError(pubsubtest.Project(a, n), reason))
		} else {
			require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(a, n)))
		}
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(b, n)))
	}
	awaitReady(t, bus)
	want := map[string][]int{a: {0, 2}, b: {0, 1, 2}}
	got := map[string][]int{}
	for range 5 {
		ev := nextEvent(t, in, 20*time.Second)
		got[ev.Project.ID] = append(got[ev.Project.ID], pubsubtest.Seq(ev))
	}
	assert.Equal(t, want, got, "everything but the rejected event, in order per project")
	// And publishing goes on.
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(a, 3)))
	assert.Equal(t, pubsubtest.Project(a, 3), nextEvent(t, in, 20*time.Second).Project)
	assert.Equal(t, 1.0, counterValue(t, reg, "statusbroadcaster_events_dropped_total", "rejected"))
}

// A record the broker refuses for good — larger than the topic's
// max.message.bytes — is dropped, logged and counted; the rest of its
// batch, and everything after it, is published, in order per project. (The
// outbox used to retry that batch forever.)
func TestKafkaRecordTooLargeForTheTopicIsDroppedAndTheRestGoesOn(t *testing.T) {
	cluster := startKafka(t)
	createTopicWithConfig(t, cluster, "small-records", testPartitions, map[string]string{"max.message.bytes": "2048"})
	reg := prometheus.NewRegistry()
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{Metrics: metrics.New(reg, nil)}, kafka.Config{Topic: "small-records"})
	broadcastRejectScenario(t, bus, reg, "too-large", strings.Repeat("y", 3_000))
}

// The same for a record refused by a broker policy, on a one-partition
// topic: the broker refuses the whole produce request (every record of the
// wave), and only the record refused alone is dropped.
func TestKafkaRecordRefusedByPolicyIsDroppedAndTheRestGoesOn(t *testing.T) {
	cluster := startKafka(t)
	createTopic(t, cluster, "policed", 1)
	cluster.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		produce := req.(*kmsg.ProduceRequest)
		poisoned := false
		for _, rt := range produce.Topics {
			for _, rp := range rt.Partitions {
				poisoned = poisoned || bytes.Contains(rp.Records, []byte("poison"))
			}
		}
		if !poisoned {
			return nil, nil, false
		}
		resp := produce.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range produce.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition, sp.ErrorCode = rp.Partition, kerr.PolicyViolation.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	reg := prometheus.NewRegistry()
	bus := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{Metrics: metrics.New(reg, nil)}, kafka.Config{Topic: "policed"})
	broadcastRejectScenario(t, bus, reg, "policy", "poison")
}
