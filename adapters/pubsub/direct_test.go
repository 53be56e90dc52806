package pubsub

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The in-memory Pub/Sub: in order, one message at a time until acked, a
// nack resends, nothing is delivered to a topic without subscribers, and
// Close releases a Publish that waits for a subscriber that stopped
// reading.
func TestDirectPubSub(t *testing.T) {
	d := newDirect()
	require.NoError(t, d.Publish("t", message.NewMessage("lost", nil)), "no subscriber: dropped")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, err := d.Subscribe(ctx, "t")
	require.NoError(t, err)

	published := make(chan error, 1)
	go func() {
		published <- d.Publish("t", message.NewMessage("1", nil), message.NewMessage("2", nil))
	}()
	m := <-msgs
	assert.Equal(t, "1", m.UUID)
	select {
	case <-msgs:
		require.FailNow(t, "the next message came before the ack")
	case <-time.After(50 * time.Millisecond):
	}
	m.Nack()
	m = <-msgs
	assert.Equal(t, "1", m.UUID, "a nack resends")
	m.Ack()
	m = <-msgs
	assert.Equal(t, "2", m.UUID)
	m.Ack()
	require.NoError(t, <-published)

	// A subscriber that stops reading holds Publish until Close.
	go func() { published <- d.Publish("t", message.NewMessage("3", nil)) }()
	<-msgs // taken, never acked
	require.NoError(t, d.Close())
	select {
	case err := <-published:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Close did not release Publish")
	}
	_, open := <-msgs
	assert.False(t, open, "Close closes the subscription")
	assert.Error(t, d.Publish("t", message.NewMessage("4", nil)))
	_, err = d.Subscribe(ctx, "t")
	assert.Error(t, err)
	require.NoError(t, d.Close(), "idempotent")
}

// A subscription whose context ends is closed and no longer delivered to.
func TestDirectSubscriptionEndsWithItsContext(t *testing.T) {
	d := newDirect()
	defer d.Close()
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := d.Subscribe(ctx, "t")
	require.NoError(t, err)
	cancel()
	for range msgs {
	}
	done := make(chan error, 1)
	go func() { done <- d.Publish("t", message.NewMessage("x", nil)) }()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "Publish waited for an ended subscription")
	}
}
