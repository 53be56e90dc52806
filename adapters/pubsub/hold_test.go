package pubsub_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
)

// A Bus that acknowledges after read (a Kafka consumer group) lets no event
// go by before its first inbox subscribes, however long that takes.
func TestAckAfterReadDeliversEverythingToTheFirstInbox(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	bus, err := pubsub.New(pubsub.Config{AckAfterRead: true}, ch, ch, nil)
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	}()
	for n := range 5 {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("held-1", n)))
	}
	in, err := bus.NewInbox()
	require.NoError(t, err)
	defer in.Close()
	time.Sleep(200 * time.Millisecond) // an inbox without topics does not release the hold
	_, dispatched := bus.Latest("held-1")
	assert.False(t, dispatched, "nothing is dispatched before an inbox subscribes")

	require.NoError(t, in.SubscribeToProject("held-1"))
	for n := range 5 {
		assert.Equal(t, pubsubtest.Project("held-1", n), nextEvent(t, in, 5*time.Second).Project)
	}
}

func TestHoldingBusClosesWithoutSubscriber(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	bus, err := pubsub.New(pubsub.Config{AckAfterRead: true}, ch, ch, nil)
	require.NoError(t, err)
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("held-2", 1)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	assert.Error(t, bus.Close(ctx), "the held event was never delivered, and Close says so")
}

// An event queued for an inbox whose reader never received it — the inbox
// unsubscribed, or closed — is not acknowledged: it goes to the next inbox
// that subscribes, and nothing goes by while none is subscribed.
func TestAckAfterReadHandsWhatNoReaderReceivedToTheNextInbox(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	bus, err := pubsub.New(pubsub.Config{AckAfterRead: true}, ch, ch, nil)
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	}()
	first, err := bus.NewInbox()
	require.NoError(t, err)
	require.NoError(t, first.SubscribeToAllProjects())
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("unread-1", 0)))
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("unread-2", 0)))
	require.Eventually(t, func() bool { _, ok := bus.Latest("unread-1"); return ok }, 5*time.Second, 5*time.Millisecond)
	first.UnsubscribeFromAllProjects() // unread-1's event is dropped from its queue, unread
	time.Sleep(200 * time.Millisecond)
	_, dispatched := bus.Latest("unread-2")
	assert.False(t, dispatched, "no inbox subscribed: unread-1's event is not acknowledged, and nothing after it goes by")
	require.NoError(t, first.Close())

	second, err := bus.NewInbox()
	require.NoError(t, err)
	defer second.Close()
	require.NoError(t, second.SubscribeToProject("unread-1"))
	require.NoError(t, second.SubscribeToProject("unread-2"))
	assert.Equal(t, pubsubtest.Project("unread-1", 0), nextEvent(t, second, 5*time.Second).Project, "handed to the next inbox")
	assert.Equal(t, pubsubtest.Project("unread-2", 0), nextEvent(t, second, 5*time.Second).Project)
}

// An unsubscribe that drops an event its reader had not received, followed
// at once by a new subscription: the event is handed over again, and the
// Bus goes on (it used to wait forever for that reader to receive an event
// no longer in its queue).
func TestAckAfterReadRedeliversWhatAnUnsubscribeDropped(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	bus, err := pubsub.New(pubsub.Config{AckAfterRead: true}, ch, ch, nil)
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	}()
	in, err := bus.NewInbox()
	require.NoError(t, err)
	defer in.Close()
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("toggled-1", 0)))
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("toggled-1", 1)))
	require.Eventually(t, func() bool { _, ok := bus.Latest("toggled-1"); return ok }, 5*time.Second, 5*time.Millisecond)
	in.UnsubscribeFromAllProjects()
	require.NoError(t, in.SubscribeToAllProjects())
	// At least once, in order: the event in the pump's hand when the
	// subscription came back may arrive as well as its new dispatch.
	var got []int
	for len(got) == 0 || got[len(got)-1] != 1 {
		ev := nextEvent(t, in, 5*time.Second)
		require.Equal(t, "toggled-1", ev.Project.ID)
		got = append(got, pubsubtest.Seq(ev))
	}
	assert.Equal(t, 0, got[0], "the dropped event comes again: %v", got)
	assert.IsNonDecreasing(t, got)
	assert.LessOrEqual(t, len(got), 3)
}

// With two inboxes, an event is acknowledged once both readers have it, or
// one has it and the other closed: the slower reader sets the pace, and a
// reader that leaves does not hold the others.
func TestAckAfterReadWaitsForEveryInboxItWentTo(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	bus, err := pubsub.New(pubsub.Config{AckAfterRead: true}, ch, ch, nil)
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	}()
	fast, err := bus.NewInbox()
	require.NoError(t, err)
	defer fast.Close()
	slow, err := bus.NewInbox()
	require.NoError(t, err)
	require.NoError(t, fast.SubscribeToAllProjects())
	require.NoError(t, slow.SubscribeToAllProjects())
	for n := range 3 {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("paced-1", n)))
	}
	assert.Equal(t, 0, pubsubtest.Seq(nextEvent(t, fast, 5*time.Second)))
	time.Sleep(200 * time.Millisecond)
	e, _ := bus.Latest("paced-1")
	assert.Equal(t, 0, pubsubtest.Seq(e.Event()), "the slow reader has not received event 0: event 1 waits")
	assert.Equal(t, 0, pubsubtest.Seq(nextEvent(t, slow, 5*time.Second)))
	assert.Equal(t, 1, pubsubtest.Seq(nextEvent(t, fast, 5*time.Second)), "once both have it, the next one comes")
	require.NoError(t, slow.Close()) // leaves with event 1 unread
	assert.Equal(t, 2, pubsubtest.Seq(nextEvent(t, fast, 5*time.Second)), "the fast reader had it: acknowledged")
}
