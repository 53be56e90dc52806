package kafka_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// takeEntries takes entries from s until it has n, failing after timeout.
func takeEntries(t *testing.T, s *fanout.Subscription, n int, timeout time.Duration) []*fanout.Entry {
	t.Helper()
	var got []*fanout.Entry
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case <-s.Ready():
			got = s.Take(got)
		case <-s.Done():
			require.FailNow(t, "subscription ended", "%v after %d of %d entries", s.Err(), len(got), n)
		case <-deadline:
			require.FailNow(t, "entries missing", "%d of %d after %s", len(got), n, timeout)
		}
	}
	require.Len(t, got, n, "no more than expected")
	return got
}

// assertNothingMore checks that s has nothing more for a while.
func assertNothingMore(t *testing.T, s *fanout.Subscription) {
	t.Helper()
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case <-s.Ready():
			if got := s.Take(nil); len(got) > 0 {
				assert.Failf(t, "unexpected entries", "%d, first %s", len(got), got[0].Data)
				return
			}
		case <-deadline:
			return
		}
	}
}

// version returns the version n of pubsubtest.Project an entry holds.
func version(t *testing.T, e *fanout.Entry) int {
	t.Helper()
	var n int
	_, err := fmt.Sscanf(e.Event().Project.Name, "app-%d", &n)
	require.NoError(t, err)
	return n
}

// awaitLatest waits until bus has dispatched version n of every project.
func awaitLatest(t *testing.T, bus *pubsub.Bus, projects []string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, id := range projects {
			e, ok := bus.Latest(id)
			if !ok || e.Event().Project.Name != fmt.Sprintf("app-%d", n) {
				return false
			}
		}
		return true
	}, 20*time.Second, 10*time.Millisecond, "every event reaches the gateway")
}

// Two gateways on one topic: a client reads some events from A, A stops,
// events are published meanwhile, and the client reconnects to B with the
// id of the last event it read: it gets exactly the events it missed, in
// order per project, then live events, without a snapshot.
func TestKafkaResumeOnAnotherGateway(t *testing.T) {
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	const projects, versions, firstRead = 8, 10, 3 // the client reads versions 1..3 of its projects on A
	ids := make([]string, projects)
	for i := range ids {
		ids[i] = fmt.Sprintf("resume-%d", i)
	}
	tests := []struct {
		name   string
		topics []domain.Topic
		picked []string
	}{
		{"one project", []domain.Topic{domain.ProjectTopic(ids[3])}, ids[3:4]},
		{"several projects", []domain.Topic{domain.ProjectTopic(ids[1]), domain.ProjectTopic(ids[2]), domain.ProjectTopic(ids[6])}, []string{ids[1], ids[2], ids[6]}},
		{"every project", []domain.Topic{domain.AllProjects}, ids},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			topic := fmt.Sprintf("resume-%d", i)
			createTopic(t, cluster, topic, testPartitions)
			kc := kafka.Config{Topic: topic}
			producer := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kc, "producer"))
			a := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kc, "gateway-a"))
			b := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kc, "gateway-b"))
			awaitReady(t, producer, a, b)

			onA, err := a.Subscribe(fanout.SubscribeOptions{Topics: tt.topics, Snapshot: true})
			require.NoError(t, err)
			broadcast := func(from, to int) {
				for n := from; n <= to; n++ {
					for _, id := range ids {
						require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(id, n)))
					}
				}
			}
			broadcast(1, firstRead)
			read := takeEntries(t, onA, firstRead*len(tt.picked), 20*time.Second)
			lastID := read[len(read)-1].ID
			assert.True(t, strings.HasPrefix(lastID, "k"), "a position in the topic: %q", lastID)
			assert.Less(t, len(lastID), 40, "4 partitions: a short id")
			// The client is cut off; A stops; events go on meanwhile.
			onA.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, a.Close(ctx))
			broadcast(firstRead+1, versions)
			awaitLatest(t, b, ids, versions)

			onB, err := b.Subscribe(fanout.SubscribeOptions{Topics: tt.topics, Snapshot: true, LastEventID: lastID})
			require.NoError(t, err)
			defer onB.Close()
			require.True(t, onB.Resumed(), "resumed, not a snapshot")
			missed := takeEntries(t, onB, (versions-firstRead)*len(tt.picked), 20*time.Second)
			next := map[string]int{}
			for _, id := range tt.picked {
				next[id] = firstRead + 1
			}
			for _, e := range missed {
				id := e.ProjectID()
				require.Contains(t, next, id, "only the projects selected")
				require.Equal(t, next[id], version(t, e), "project %s: exactly the next missed event", id)
				next[id]++
			}
			assertNothingMore(t, onB)

			// Then live events, whose ids resume on B too.
			broadcast(versions+1, versions+1)
			live := takeEntries(t, onB, len(tt.picked), 20*time.Second)
			for _, e := range live {
				assert.Equal(t, versions+1, version(t, e))
			}
			again, err := b.Subscribe(fanout.SubscribeOptions{Topics: tt.topics, Snapshot: true, LastEventID: missed[len(missed)-1].ID})
			require.NoError(t, err)
			defer again.Close()
			require.True(t, again.Resumed())
			assert.Len(t, takeEntries(t, again, len(tt.picked), 20*time.Second), len(tt.picked), "the live events after it")
		})
	}
}

// What a gateway cannot replay exactly gets the snapshot: an id of
// another topic, garbage, an unknown partition, an offset beyond the end,
// an offset older than the history.
func TestKafkaResumeFallsBackToSnapshot(t *testing.T) {
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	producer := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{ClientID: "producer"})
	gateway := newKafkaBus(t, brokers, pubsub.Config{Hub: fanout.Config{History: 8}}, kafka.Config{ClientID: "gateway"})
	awaitReady(t, producer, gateway)
	// 80 events, 8 in the history: at least 12 of each partition's 20
	// first records, offsets 0 up, have left it.
	ids := []string{"fallback-0", "fallback-1", "fallback-2", "fallback-3"}
	for n := 1; n <= 20; n++ {
		for _, id := range ids {
			require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(id, n)))
		}
	}
	awaitLatest(t, gateway, ids, 20)
	all := gateway.LatestAll()
	newest := all[len(all)-1] // the last event the gateway read
	codec := kafka.NewCursorCodec(pubsub.DefaultTopic)
	vec, ok := codec.Decode(newest.ID)
	require.True(t, ok, "a gateway's id decodes: %q", newest.ID)

	shifted := func(partition int32, offset int64) []fanout.Position {
		out := append([]fanout.Position(nil), vec...)
		for i := range out {
			if out[i].Partition == partition {
				out[i].Offset = offset
			}
		}
		return out
	}
	p := vec[0].Partition
	tests := []struct{ name, id string }{
		{"garbage", "garbage"},
		{"prefix only", "k"},
		{"bad base64", "k!!!!"},
		{"another topic", kafka.NewCursorCodec("another.topic").Encode(vec)},
		{"unknown partition", codec.Encode(append(append([]fanout.Position(nil), vec...), fanout.Position{Partition: 99, Offset: 0}))},
		{"offset beyond the end", codec.Encode(shifted(p, vec[0].Offset+1_000))},
		{"offset older than the history", codec.Encode(shifted(p, 0))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := gateway.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: tt.id})
			require.NoError(t, err)
			defer s.Close()
			assert.False(t, s.Resumed())
			snapshot := takeEntries(t, s, len(ids), 10*time.Second)
			for _, e := range snapshot {
				assert.Equal(t, 20, version(t, e), "the latest state of each project")
			}
		})
	}
	// The newest id itself resumes, with nothing to replay.
	s, err := gateway.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: newest.ID})
	require.NoError(t, err)
	defer s.Close()
	assert.True(t, s.Resumed())
}

func withClient(k kafka.Config, clientID string) kafka.Config {
	k.ClientID = clientID
	return k
}

// A gateway restarted with OffsetOldest reads the topic again, so a client
// resumes on it from an id it got before the restart.
func TestKafkaResumeAfterARestartFromTheOldestOffset(t *testing.T) {
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	kc := kafka.Config{InitialOffset: kafka.OffsetOldest}
	producer := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{}, "producer"))
	gateway := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kc, "gateway"))
	awaitReady(t, producer, gateway)
	ids := []string{"restart-0", "restart-1", "restart-2", "restart-3", "restart-4"}
	broadcast := func(n int) {
		for _, id := range ids {
			require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(id, n)))
		}
	}
	sub, err := gateway.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}})
	require.NoError(t, err)
	broadcast(1)
	broadcast(2)
	read := takeEntries(t, sub, 2*len(ids), 20*time.Second)
	lastID := read[len(read)-1].ID
	sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, gateway.Close(ctx))
	broadcast(3)
	broadcast(4)

	restarted := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kc, "gateway"))
	awaitLatest(t, restarted, ids, 4)
	s, err := restarted.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: lastID})
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.Resumed())
	next := map[string]int{}
	for _, e := range takeEntries(t, s, 2*len(ids), 20*time.Second) {
		require.Equal(t, 3+next[e.ProjectID()], version(t, e), "project %s", e.ProjectID())
		next[e.ProjectID()]++
	}
	assertNothingMore(t, s)
}

// A gateway started after the events (reading from the newest offset)
// fills its history from the tail of the topic before it is ready: it
// resumes an id another gateway gave out before it started, exactly, and
// then delivers live events once (the consumer's overlap with the fill is
// skipped). One whose fill holds less gets the snapshot for that id.
func TestKafkaGatewayFillsItsHistoryFromTheTopic(t *testing.T) {
	cluster := startKafka(t)
	brokers := cluster.ListenAddrs()
	producer := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{}, "producer"))
	first := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{}, "first"))
	awaitReady(t, producer, first)
	ids := []string{"fill-0", "fill-1", "fill-2", "fill-3", "fill-4", "fill-5"}
	broadcast := func(n int) {
		for _, id := range ids {
			require.NoError(t, producer.BroadcastProjectUpdate(pubsubtest.Project(id, n)))
		}
	}
	sub, err := first.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}})
	require.NoError(t, err)
	defer sub.Close()
	broadcast(1)
	broadcast(2)
	lastID := takeEntries(t, sub, 2*len(ids), 20*time.Second)[2*len(ids)-1].ID
	broadcast(3)
	broadcast(4)
	takeEntries(t, sub, 2*len(ids), 20*time.Second) // on the topic

	later := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{FillHistory: 100}, "later"))
	awaitReady(t, later)
	s, err := later.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: lastID})
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.Resumed(), "resumed from an id given out before the gateway started")
	next := map[string]int{}
	for _, e := range takeEntries(t, s, 2*len(ids), 20*time.Second) {
		require.Equal(t, 3+next[e.ProjectID()], version(t, e), "project %s", e.ProjectID())
		next[e.ProjectID()]++
	}
	assertNothingMore(t, s)
	broadcast(5)
	for _, e := range takeEntries(t, s, len(ids), 20*time.Second) {
		assert.Equal(t, 5, version(t, e), "live, once")
	}
	assertNothingMore(t, s)

	// One record per partition: the id's successors are not all there.
	short := newKafkaBus(t, brokers, pubsub.Config{}, withClient(kafka.Config{FillHistory: testPartitions}, "short"))
	awaitReady(t, short)
	s2, err := short.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: lastID})
	require.NoError(t, err)
	defer s2.Close()
	assert.False(t, s2.Resumed(), "the snapshot instead")
}

// Partitions added later: an id given out before a partition existed does
// not name it, and a gateway that read the partition from its first record
// replays all of it, with the rest past the id.
func TestKafkaResumeWithPartitionsAddedLater(t *testing.T) {
	const topic = "resume-growing"
	cluster := startKafka(t)
	createTopic(t, cluster, topic, 2)
	producer := manualProducer(t, cluster, topic)
	produce := func(id string, n int, partition int32) {
		require.NoError(t, producer.ProduceSync(context.Background(), eventRecord(t, id, n, partition, time.Now())).FirstErr())
	}
	kc := kafka.Config{Topic: topic, PartitionCheck: 100 * time.Millisecond}
	a := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, withClient(kc, "gateway-a"))
	b := newKafkaBus(t, cluster.ListenAddrs(), pubsub.Config{}, withClient(kc, "gateway-b"))
	awaitReady(t, a, b)
	sub, err := a.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}})
	require.NoError(t, err)
	defer sub.Close()
	produce("p0", 1, 0)
	produce("p1", 1, 1)
	read := takeEntries(t, sub, 2, 20*time.Second)
	lastID := read[1].ID
	vec, ok := kafka.NewCursorCodec(topic).Decode(lastID)
	require.True(t, ok)
	require.Len(t, vec, 2, "the id names the two partitions")

	addPartitions(t, cluster, topic, 3)
	fresh := manualProducer(t, cluster, topic) // knows the third partition
	require.NoError(t, fresh.ProduceSync(context.Background(), eventRecord(t, "p2", 1, 2, time.Now())).FirstErr())
	require.NoError(t, fresh.ProduceSync(context.Background(), eventRecord(t, "p2", 2, 2, time.Now())).FirstErr())
	produce("p0", 2, 0)
	awaitLatest(t, b, []string{"p2"}, 2)
	awaitLatest(t, b, []string{"p0"}, 2)

	s, err := b.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: lastID})
	require.NoError(t, err)
	defer s.Close()
	require.True(t, s.Resumed())
	got := map[string][]int{}
	for _, e := range takeEntries(t, s, 3, 20*time.Second) {
		got[e.ProjectID()] = append(got[e.ProjectID()], version(t, e))
	}
	assert.Equal(t, map[string][]int{"p0": {2}, "p2": {1, 2}}, got, "the new partition from its first record, p0 past the id")
	assertNothingMore(t, s)
}
