package pubsub_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Bus.Publisher hands codec messages straight to the pub/sub: they reach
// inboxes like broadcasts; with DedupeUUIDs a message published again with
// its UUID (an outbox's repeat after a crash) is dispatched once; another
// topic and a closed Bus are errors.
func TestPublisherAndDedupeUUIDs(t *testing.T) {
	bus, err := pubsub.NewInMemory(pubsub.Config{DedupeUUIDs: 2}, nil)
	require.NoError(t, err)
	in, err := bus.NewInbox()
	require.NoError(t, err)
	defer in.Close()
	require.NoError(t, in.SubscribeToAllProjects())

	msg := func(n int) *message.Message {
		ev, err := domain.NewProjectUpdated(pubsubtest.Project("fwd", n))
		require.NoError(t, err)
		m, err := codec.NewMessage(ev)
		require.NoError(t, err)
		return m
	}
	m0, m1, m2 := msg(0), msg(1), msg(2)
	pub := bus.Publisher()
	require.NoError(t, pub.Publish(bus.Topic(), m0, m1))
	require.NoError(t, pub.Publish(bus.Topic(), m0.Copy(), m1.Copy(), m2)) // a replayed suffix
	for _, want := range []int{0, 1, 2} {
		select {
		case ev := <-in.Events():
			assert.Equal(t, pubsubtest.Project("fwd", want), ev.Project)
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no event")
		}
	}
	select {
	case ev := <-in.Events():
		t.Fatalf("a repeat was dispatched: %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	assert.Error(t, pub.Publish("another.topic", msg(3)))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, bus.Close(ctx))
	assert.Error(t, pub.Publish(bus.Topic(), msg(4)), "after Close")
}
