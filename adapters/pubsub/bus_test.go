package pubsub_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

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

func TestInMemoryContract(t *testing.T) {
	pubsubtest.TestBus(t, pubsubtest.Features{Name: "memory", ManyEvents: 10_000, SlowSubscriberEvents: 12_000},
		func(t *testing.T) pubsubtest.Bus { return newInMemory(t, pubsub.Config{InboxQueueSize: 4_096}) })
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
