package pubsub_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Sarama's metrics library starts one ticker goroutine per process,
		// on first use, and never stops it: a singleton, not a leak per Bus.
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		// A Sarama producer whose circuit breaker opened (broker down, or
		// its connections cut by Close) leaves a goroutine sleeping out the
		// breaker's 10s timeout, even after it is closed; it then ends
		// (breaker.timer: time.Sleep, then a state change). Its top frame
		// is time.Sleep, hence IgnoreAnyFunction.
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"),
	)
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
