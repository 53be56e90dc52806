package pubsub_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// TestSubscribeCyclesLeakNothing: 10,000 inboxes are made, subscribed,
// given events, unsubscribed and closed through the Go API, concurrently
// and in every order (closed with events unread, closed without
// unsubscribing, closed twice, used after close). Goroutines return to the
// baseline while the Bus runs, and goleak finds none left after it closes.
func TestSubscribeCyclesLeakNothing(t *testing.T) {
	const (
		cycles  = 10_000
		workers = 8
	)
	ignore := goleak.IgnoreCurrent()
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 5*time.Second, time.Millisecond)
	running := goleak.IgnoreCurrent() // the Bus's own goroutines, and whatever ran before

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < cycles; i += workers {
				if err := cycle(bus, w, i); err != nil {
					errs <- fmt.Errorf("cycle %d: %w", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	// Back to what ran before the cycles, while the Bus runs. Goroutines
	// that other tests' Sarama clients start late (a circuit breaker's
	// timer, the metrics ticker; see TestMain) are not the inboxes'.
	require.NoError(t, goleak.Find(running,
		goleak.IgnoreTopFunction("github.com/rcrowley/go-metrics.(*meterArbiter).tick"),
		goleak.IgnoreAnyFunction("github.com/eapache/go-resiliency/breaker.(*Breaker).timer"),
	), "goroutines not back to the baseline")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, bus.Close(ctx))
	goleak.VerifyNone(t, ignore)
}

// cycle runs one inbox's life; its shape depends on i.
func cycle(bus *pubsub.Bus, w, i int) error {
	in, err := bus.NewInbox()
	if err != nil {
		return err
	}
	id := fmt.Sprintf("cyc-%d-%d", w, i%7)
	if err := in.SubscribeToProject(id); err != nil {
		return err
	}
	if i%3 == 0 {
		if err := in.SubscribeToAllProjects(); err != nil {
			return err
		}
	}
	switch i % 5 {
	case 0: // receive an event, then unsubscribe and close
		if err := bus.BroadcastProjectUpdate(domain.Project{ID: id, Name: "n", Status: domain.StatusReady}); err != nil {
			return err
		}
		select {
		case ev := <-in.Events():
			if i%3 != 0 && ev.Project.ID != id {
				return fmt.Errorf("got %s on an inbox of %s", ev.Project.ID, id)
			}
		case <-time.After(10 * time.Second):
			return fmt.Errorf("no event for %s", id)
		}
		in.UnsubscribeFromProject(id)
		in.UnsubscribeFromAllProjects()
	case 1: // close with an event on its way, unread
		if err := bus.BroadcastProjectUpdate(domain.Project{ID: id, Name: "n", Status: domain.StatusReady}); err != nil {
			return err
		}
	case 2: // close without unsubscribing
	case 3: // unsubscribe only
		in.UnsubscribeFromProject(id)
	case 4: // close twice; subscribing after close fails
		if err := in.Close(); err != nil {
			return err
		}
		if err := in.SubscribeToProject(id); err == nil {
			return fmt.Errorf("subscribe after close succeeded")
		}
	}
	if err := in.Close(); err != nil {
		return err
	}
	// The channel is closed once the inbox is: a reader is never parked.
	for range in.Events() {
	}
	return nil
}

// TestSubscribeCyclesBaselineIsMeaningful: the check above would see an
// inbox that is never closed (its pump goroutine).
func TestSubscribeCyclesBaselineIsMeaningful(t *testing.T) {
	bus := newInMemory(t, pubsub.Config{})
	require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 5*time.Second, time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	baseline := runtime.NumGoroutine()
	var open []interface{ Close() error }
	for range 10 {
		in, err := bus.NewInbox()
		require.NoError(t, err)
		require.NoError(t, in.SubscribeToAllProjects())
		open = append(open, in)
	}
	assert.GreaterOrEqual(t, runtime.NumGoroutine(), baseline+10, "an open inbox holds a goroutine")
	for _, in := range open {
		require.NoError(t, in.Close())
	}
	waitGoroutines(t, baseline, 5*time.Second)
}

// waitGoroutines waits until at most n goroutines run. It polls from the
// test's goroutine (require.Eventually would add one of its own).
func waitGoroutines(t *testing.T, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			require.Failf(t, "goroutines not back to the baseline", "%d running, baseline %d", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
