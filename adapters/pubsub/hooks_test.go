package pubsub_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// hookPublisher is an adapter's publisher as the Kafka adapter plugs it
// into the Bus: it measures records its own way (pubsub.RecordSizer) and
// refuses for good the messages of the projects in refuse
// (pubsub.RejectedError), the first time with a temporary failure of the
// whole call, then alongside the others it publishes.
type hookPublisher struct {
	next     message.Publisher
	overhead int // added to a message's payload by RecordSize
	refuse   map[string]bool

	mu    sync.Mutex
	calls int
}

func (p *hookPublisher) RecordSize(msg *message.Message) int { return len(msg.Payload) + p.overhead }

func (p *hookPublisher) Publish(topic string, msgs ...*message.Message) error {
	p.mu.Lock()
	p.calls++
	first := p.calls == 1
	p.mu.Unlock()
	rejected := map[string]error{}
	var keep []*message.Message
	for _, msg := range msgs {
		if p.refuse[msg.Metadata.Get(codec.MetadataProjectID)] {
			rejected[msg.UUID] = errors.New("forbidden by policy")
			continue
		}
		keep = append(keep, msg)
	}
	if len(rejected) == 0 {
		return p.next.Publish(topic, msgs...)
	}
	if first {
		return &pubsub.RejectedError{Rejected: rejected, Temporary: errors.New("broker busy")}
	}
	if err := p.next.Publish(topic, keep...); err != nil {
		return err
	}
	return &pubsub.RejectedError{Rejected: rejected}
}

func (p *hookPublisher) Close() error { return p.next.Close() }

// An adapter's RecordSizer is the size Broadcast* compares with
// MaxMessageBytes, and the messages its RejectedError names are dropped
// and counted while the others of their batch are published (retried
// when the error carries a temporary failure), in order.
func TestAdapterHooksRecordSizerAndRejectedError(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	pub := &hookPublisher{next: ch, overhead: 3_000, refuse: map[string]bool{"refused": true}}
	reg := prometheus.NewRegistry()
	bus, err := pubsub.New(pubsub.Config{
		Metrics: metrics.New(reg, nil), MaxMessageBytes: 4_000,
		RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond,
	}, pub, ch, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, closeBus(t, bus, 5*time.Second)) })
	in := subscribeAll(t, bus)

	// The envelope of this event is well under 4,000 bytes, its record
	// (as the adapter measures it) is not.
	err = bus.BroadcastProjectError(pubsubtest.Project("big", 1), strings.Repeat("x", 1_000))
	require.ErrorIs(t, err, domain.ErrInvalidEvent)
	require.NoError(t, bus.BroadcastProjectError(pubsubtest.Project("big", 1), "short"))

	for n := 1; n <= 5; n++ {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("kept", n)))
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("refused", n)))
	}
	ev := nextEvent(t, in, 5*time.Second)
	assert.Equal(t, "big", ev.Project.ID)
	for n := 1; n <= 5; n++ {
		ev := nextEvent(t, in, 5*time.Second)
		require.Equal(t, pubsubtest.Project("kept", n), ev.Project, "in order, none refused")
	}
	require.Eventually(t, func() bool {
		return counterValue(t, reg, "statusbroadcaster_events_dropped_total", "rejected") == 5
	}, 5*time.Second, time.Millisecond, "every refused event dropped and counted once")
	select {
	case ev := <-in.Events():
		assert.Failf(t, "unexpected event", "%+v", ev)
	case <-time.After(50 * time.Millisecond):
	}
}

// Bus.Publisher (the transactional outbox's forwarder publishes through it)
// drops what the pub/sub refuses for good and succeeds, so the forwarder
// acknowledges the row and goes on to the events behind it; a temporary
// failure that comes with it is still an error, to be retried.
func TestPublisherDropsWhatThePubSubRejectsForGood(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	pub := &hookPublisher{next: ch, refuse: map[string]bool{"refused": true}}
	reg := prometheus.NewRegistry()
	bus, err := pubsub.New(pubsub.Config{Metrics: metrics.New(reg, nil)}, pub, ch, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, closeBus(t, bus, 5*time.Second)) })
	in := subscribeAll(t, bus)
	msgOf := func(id string, n int) *message.Message {
		ev, err := domain.NewProjectUpdated(pubsubtest.Project(id, n))
		require.NoError(t, err)
		msg, err := codec.NewMessage(ev)
		require.NoError(t, err)
		return msg
	}
	p := bus.Publisher()
	// The first call of hookPublisher also fails for a while (a temporary
	// failure): an error, so that the forwarder retries.
	require.Error(t, p.Publish(bus.Topic(), msgOf("refused", 1), msgOf("kept", 1)))
	require.NoError(t, p.Publish(bus.Topic(), msgOf("refused", 2)), "refused for good: dropped, not an error")
	require.NoError(t, p.Publish(bus.Topic(), msgOf("kept", 2)))
	assert.Equal(t, pubsubtest.Project("kept", 2), nextEvent(t, in, 5*time.Second).Project, "the events behind it go on")
	assert.Equal(t, 2.0, counterValue(t, reg, "statusbroadcaster_events_dropped_total", "rejected"))
}

// abortablePublisher's Close hangs until Abort is called, as a Kafka
// producer's does on a broker that stopped answering until its
// connections are cut.
type abortablePublisher struct {
	message.Publisher
	aborted chan struct{}
	once    sync.Once
}

func (p *abortablePublisher) Abort() { p.once.Do(func() { close(p.aborted) }) }

func (p *abortablePublisher) Close() error {
	<-p.aborted
	return p.Publisher.Close()
}

// A publisher that does not stop by Close's deadline is abandoned and, if
// it is a pubsub.Aborter, aborted, so that what it was doing ends now.
func TestCloseAbortsAnAborterItAbandons(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	pub := &abortablePublisher{Publisher: ch, aborted: make(chan struct{})}
	bus, err := pubsub.New(pubsub.Config{}, pub, ch, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = bus.Close(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "abandoned after the deadline: closing the publisher")
	select {
	case <-pub.aborted:
	case <-time.After(5 * time.Second):
		pub.Abort() // let the goroutine end before goleak looks
		require.FailNow(t, "Close abandoned the publisher without aborting it")
	}
}
