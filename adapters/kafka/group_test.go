package kafka_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// groupCluster starts a broker whose groups accept short sessions, so that
// a member that vanished is noticed quickly.
func groupCluster(t *testing.T) *kfake.Cluster {
	return startKafka(t, kfake.GroupMinSessionTimeout(100*time.Millisecond))
}

// broadcastAll publishes events through a gateway Bus of its own and waits
// until they are on the topic.
func broadcastAll(t *testing.T, brokers []string, topic string, events []domain.Project) {
	t.Helper()
	producer, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: brokers, Topic: topic}, testLogger())
	require.NoError(t, err)
	awaitReady(t, producer)
	for _, p := range events {
		require.NoError(t, producer.BroadcastProjectUpdate(p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, producer.Close(ctx), "every event is published")
}

// The reproduction: 200 projects published; a member of a group,
// with a 16-event inbox, reads one event, pauses, closes its inbox, lets
// the Bus run on with no inbox for a while, and closes; a second member of
// the group starts. Between them, the group delivers every project. (It
// delivered 18 of 200 when the Bus acknowledged what it had queued: the
// small inbox was ended as too slow, and the Bus went on acknowledging with
// nobody listening.)
func TestKafkaConsumerGroupCommitsOnlyWhatItsReaderReceived(t *testing.T) {
	cluster := groupCluster(t)
	brokers := cluster.ListenAddrs()
	const projects = 200
	var events []domain.Project
	for i := range projects {
		events = append(events, pubsubtest.Project(fmt.Sprintf("repro-%d", i), 0))
	}
	broadcastAll(t, brokers, pubsub.DefaultTopic, events)

	group := kafka.Config{Brokers: brokers, ConsumerGroup: "repro", InitialOffset: kafka.OffsetOldest}
	first, err := kafka.New(pubsub.Config{InboxQueueSize: 16}, group, testLogger())
	require.NoError(t, err)
	in, err := first.NewInbox()
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	got := map[string]bool{nextEvent(t, in, 20*time.Second).Project.ID: true}
	time.Sleep(time.Second) // the reader pauses
	require.NoError(t, in.Close())
	time.Sleep(time.Second) // no inbox: nothing may be acknowledged
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, first.Close(ctx))

	second := newKafkaBus(t, brokers, pubsub.Config{InboxQueueSize: 16}, group)
	in2 := kafkaInbox(t, second)
	for len(got) < projects {
		ev := nextEvent(t, in2, 30*time.Second)
		got[ev.Project.ID] = true
	}
	assert.Len(t, got, projects, "the group delivered every project")
}

// A member with an inbox subscribed to one project acknowledges the other
// projects' records at once (nobody wants them), and holds its project's
// records until its reader has them.
func TestKafkaConsumerGroupAcknowledgesWhatNoInboxSelects(t *testing.T) {
	cluster := groupCluster(t)
	brokers := cluster.ListenAddrs()
	var events []domain.Project
	for n := range 5 {
		events = append(events, pubsubtest.Project("other-1", n), pubsubtest.Project("wanted-1", n))
	}
	broadcastAll(t, brokers, pubsub.DefaultTopic, events)
	group := kafka.Config{Brokers: brokers, ConsumerGroup: "selective", InitialOffset: kafka.OffsetOldest}
	bus := newKafkaBus(t, brokers, pubsub.Config{}, group)
	in, err := bus.NewInbox()
	require.NoError(t, err)
	defer in.Close()
	require.NoError(t, in.SubscribeToProject("wanted-1"))
	for n := range 5 {
		assert.Equal(t, pubsubtest.Project("wanted-1", n), nextEvent(t, in, 20*time.Second).Project)
	}
	// other-1's events went by (dispatched, acknowledged) without a reader.
	require.Eventually(t, func() bool {
		e, ok := bus.Latest("other-1")
		return ok && pubsubtest.Seq(e.Event()) == 4
	}, 10*time.Second, 10*time.Millisecond)
}

// groupMemberEnv makes the test binary a group member (see
// TestKafkaGroupMemberProcess): "brokers|topic|group".
const groupMemberEnv = "STATUSBROADCASTER_GROUP_MEMBER"

// TestKafkaGroupMemberProcess is not a test: run by
// TestKafkaConsumerGroupMemberKilledWhileReading as a child process, it
// joins a consumer group, reads every event slowly and prints each one it
// received ("confirmed <project> <n>"), until it is killed.
func TestKafkaGroupMemberProcess(t *testing.T) {
	spec := os.Getenv(groupMemberEnv)
	if spec == "" {
		t.Skip("a child process of TestKafkaConsumerGroupMemberKilledWhileReading")
	}
	parts := strings.Split(spec, "|")
	bus, err := kafka.New(pubsub.Config{}, kafka.Config{
		Brokers: strings.Split(parts[0], ","), Topic: parts[1], ConsumerGroup: parts[2], InitialOffset: kafka.OffsetOldest,
	}, testLogger())
	require.NoError(t, err)
	in, err := bus.NewInbox()
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	for ev := range in.Events() {
		fmt.Printf("confirmed %s %d\n", ev.Project.ID, pubsubtest.Seq(ev))
		time.Sleep(3 * time.Millisecond)
	}
	t.Fatalf("the inbox ended: %v", in.Err())
}

// A member of a group killed (SIGKILL) while it reads: the next member
// receives every event the first did not confirm, in order per project.
// (With the Bus acknowledging what it queued, the offsets committed every
// second ran up to a full inbox ahead of the reader, and all of that was
// lost.)
func TestKafkaConsumerGroupMemberKilledWhileReading(t *testing.T) {
	cluster := groupCluster(t)
	brokers := cluster.ListenAddrs()
	const projects, perProject, confirmedBeforeKill = 20, 60, 400
	var events []domain.Project
	for n := range perProject {
		for p := range projects {
			events = append(events, pubsubtest.Project(fmt.Sprintf("crash-%d", p), n))
		}
	}
	broadcastAll(t, brokers, pubsub.DefaultTopic, events)

	const group = "crash"
	child := exec.Command(os.Args[0], "-test.run", "^TestKafkaGroupMemberProcess$")
	child.Env = append(os.Environ(), groupMemberEnv+"="+strings.Join(brokers, ",")+"|"+pubsub.DefaultTopic+"|"+group)
	stdout, err := child.StdoutPipe()
	require.NoError(t, err)
	child.Stderr = os.Stderr
	require.NoError(t, child.Start())
	killed := false
	defer func() {
		if !killed {
			_ = child.Process.Kill()
			_ = child.Wait()
		}
	}()
	// A child that never gets there is killed, and the test fails.
	watchdog := time.AfterFunc(60*time.Second, func() { _ = child.Process.Kill() })
	confirmed := map[string]int{}
	lines := bufio.NewScanner(stdout)
	n := 0
	for n < confirmedBeforeKill && lines.Scan() {
		var id string
		var seq int
		if _, err := fmt.Sscanf(lines.Text(), "confirmed %s %d", &id, &seq); err != nil {
			continue // the test framework's own lines
		}
		require.Equal(t, confirmed[id], seq, "the child got %s out of order", id)
		confirmed[id] = seq + 1 // the next one it needs
		n++
	}
	require.True(t, watchdog.Stop(), "the child confirmed only %d events in 60s", n)
	require.NoError(t, child.Process.Signal(syscall.SIGKILL))
	killed = true
	_ = child.Wait()
	// Lines the child wrote before it died, still in the pipe.
	for lines.Scan() {
		var id string
		var seq int
		if _, err := fmt.Sscanf(lines.Text(), "confirmed %s %d", &id, &seq); err == nil {
			confirmed[id] = seq + 1
		}
	}
	total := 0
	for _, n := range confirmed {
		total += n
	}
	t.Logf("the child confirmed %d events before it was killed", total)

	second := newKafkaBus(t, brokers, pubsub.Config{}, kafka.Config{ConsumerGroup: group, InitialOffset: kafka.OffsetOldest})
	in := kafkaInbox(t, second)
	next := map[string]int{} // per project, the next event the second member must get at the latest
	last := map[string]int{} // per project, the last event received
	for p := range projects {
		id := fmt.Sprintf("crash-%d", p)
		next[id], last[id] = confirmed[id], -1
	}
	redelivered := 0
	for pending := projects; pending > 0; {
		ev := nextEvent(t, in, 60*time.Second)
		id, n := ev.Project.ID, pubsubtest.Seq(ev)
		require.Greater(t, n, last[id], "%s: in order, each once", id)
		require.LessOrEqual(t, n, next[id], "%s: event %d was neither confirmed by the first member nor received by the second", id, next[id])
		if n < next[id] {
			redelivered++
		}
		last[id] = n
		if n == next[id] {
			next[id]++
		}
		if n == perProject-1 {
			pending--
		}
	}
	t.Logf("the second member received again %d events the first had confirmed (at least once)", redelivered)
}
