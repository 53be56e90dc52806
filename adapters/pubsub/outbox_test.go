package pubsub_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// gatedPublisher wraps a real publisher. While the gate is shut, Publish
// either blocks (until the gate opens or the publisher closes) or fails.
type gatedPublisher struct {
	next message.Publisher
	fail bool // when shut: return an error instead of blocking

	mu      sync.Mutex
	open    chan struct{} // closed while the gate is open
	closed  chan struct{}
	once    sync.Once
	entered chan struct{} // receives when a Publish call reaches the gate
	calls   atomic.Int64
}

func newGatedPublisher(next message.Publisher, fail bool) *gatedPublisher {
	return &gatedPublisher{next: next, fail: fail, open: make(chan struct{}), closed: make(chan struct{}), entered: make(chan struct{}, 1)}
}

func (g *gatedPublisher) Publish(topic string, msgs ...*message.Message) error {
	g.calls.Add(1)
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return g.next.Publish(topic, msgs...)
	default:
	}
	select {
	case g.entered <- struct{}{}:
	default:
	}
	if g.fail {
		return errors.New("broker unreachable")
	}
	select {
	case <-open:
		return g.next.Publish(topic, msgs...)
	case <-g.closed:
		return errors.New("publisher closed")
	}
}

func (g *gatedPublisher) openGate() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.open)
}

func (g *gatedPublisher) Close() error {
	g.once.Do(func() { close(g.closed) })
	return g.next.Close()
}

// newGatedBus returns a Bus whose publisher is gated, and its metrics
// registry.
func newGatedBus(t testing.TB, cfg pubsub.Config, fail bool) (*pubsub.Bus, *gatedPublisher, *prometheus.Registry) {
	t.Helper()
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	gate := newGatedPublisher(ch, fail)
	reg := prometheus.NewRegistry()
	var bus *pubsub.Bus
	cfg.Metrics = metrics.New(reg, func() float64 { return float64(bus.OutboxDepth()) })
	cfg.RetryMin, cfg.RetryMax = time.Millisecond, 10*time.Millisecond
	bus, err := pubsub.New(cfg, gate, ch, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return bus, gate, reg
}

func closeBus(t testing.TB, bus *pubsub.Bus, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return bus.Close(ctx)
}

func subscribeAll(t *testing.T, bus *pubsub.Bus) ports.Inbox {
	t.Helper()
	in, err := bus.NewInbox()
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	return in
}

// The seed's promise: broadcasting never interrupts the caller, even when
// the pub/sub hangs for good. Every call returns while Publish is provably
// blocked; events are delivered in order once it recovers.
func TestBroadcastDoesNotWaitForABlockedPublisher(t *testing.T) {
	bus, gate, reg := newGatedBus(t, pubsub.Config{}, false)
	in := subscribeAll(t, bus)
	defer func() { require.NoError(t, closeBus(t, bus, 5*time.Second)) }()

	const n = 5_000
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("p", 0)))
	<-gate.entered // the outbox is now stuck inside Publish
	var slowest time.Duration
	for i := 1; i < n; i++ {
		start := time.Now()
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("p", i)))
		slowest = max(slowest, time.Since(start))
	}
	assert.EqualValues(t, 1, gate.calls.Load(), "Publish is still blocked in its first call")
	t.Logf("slowest of %d broadcasts while the publisher was blocked: %s", n, slowest)
	assert.Equal(t, n-1, bus.OutboxDepth(), "all but the in-flight event wait in the outbox")
	assert.Equal(t, float64(n-1), metricValue(t, reg, "statusbroadcaster_outbox_queue_depth", ""), "and /metrics says so")

	gate.openGate()
	for i := range n {
		select {
		case ev := <-in.Events():
			require.Equal(t, i, pubsubtest.Seq(ev), "delivered in broadcast order after recovery")
		case <-time.After(10 * time.Second):
			require.FailNow(t, "event not delivered after recovery", "event %d", i)
		}
	}
}

// A full outbox during an outage keeps the latest state of every project.
func TestOutboxAtItsBoundKeepsTheLatestStateOfEachProject(t *testing.T) {
	bus, gate, reg := newGatedBus(t, pubsub.Config{OutboxCapacity: 100, BatchSize: 10}, false)
	in := subscribeAll(t, bus)
	defer func() { require.NoError(t, closeBus(t, bus, 5*time.Second)) }()

	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("warmup", 0)))
	<-gate.entered
	const projects, rounds = 20, 50
	for r := range rounds {
		for p := range projects {
			require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("p%d", p), r)))
		}
	}
	assert.LessOrEqual(t, bus.OutboxDepth(), 100, "the outbox stays within its bound")
	assert.Positive(t, counterValue(t, reg, "statusbroadcaster_events_dropped_total", "coalesced"))

	gate.openGate()
	last := map[string]int{}
	deadline := time.After(10 * time.Second)
	for len(last) < projects || !allAt(last, rounds-1) {
		select {
		case ev := <-in.Events():
			if ev.Project.ID == "warmup" {
				continue
			}
			n := pubsubtest.Seq(ev)
			if prev, ok := last[ev.Project.ID]; ok {
				require.Greater(t, n, prev, "order per project survives coalescing")
			}
			last[ev.Project.ID] = n
		case <-deadline:
			require.FailNow(t, "latest states not delivered", "got %v", last)
		}
	}
}

func allAt(m map[string]int, v int) bool {
	for _, n := range m {
		if n != v {
			return false
		}
	}
	return true
}

// Publish errors are retried; nothing is returned to the caller, every
// failure is counted, and order holds after recovery.
func TestFailingPublisherIsRetriedInOrder(t *testing.T) {
	bus, gate, reg := newGatedBus(t, pubsub.Config{}, true)
	in := subscribeAll(t, bus)
	defer func() { require.NoError(t, closeBus(t, bus, 5*time.Second)) }()

	for i := range 100 {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("p", i)))
	}
	<-gate.entered
	require.Eventually(t, func() bool {
		return counterValue(t, reg, "statusbroadcaster_events_failed_total", "") > 0
	}, 5*time.Second, time.Millisecond)
	gate.openGate()
	for i := range 100 {
		select {
		case ev := <-in.Events():
			require.Equal(t, i, pubsubtest.Seq(ev))
		case <-time.After(10 * time.Second):
			require.FailNow(t, "event not delivered after the publisher recovered")
		}
	}
	// The metric is counted when Publish returns, which may be just after
	// the reader got the last event.
	assert.Eventually(t, func() bool {
		return counterValue(t, reg, "statusbroadcaster_events_published_total", "") == 100
	}, 5*time.Second, time.Millisecond)
}

// Close flushes what is queued before it returns.
func TestCloseFlushesTheOutbox(t *testing.T) {
	bus, gate, _ := newGatedBus(t, pubsub.Config{}, false)
	in := subscribeAll(t, bus)
	var got []int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range in.Events() {
			got = append(got, pubsubtest.Seq(ev))
		}
	}()
	for i := range 1000 {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("p", i)))
	}
	gate.openGate()
	require.NoError(t, closeBus(t, bus, 5*time.Second))
	<-done
	require.Len(t, got, 1000, "every queued event was published before Close returned")
	for i, n := range got {
		require.Equal(t, i, n)
	}
	// A broadcast after Close is lost: the caller is told, so that an
	// HTTP intake answers 503 rather than 202.
	err := bus.BroadcastProjectUpdate(pubsubtest.Project("p", 1000))
	require.ErrorIs(t, err, domain.ErrBroadcasterClosed)
	assert.NotErrorIs(t, err, domain.ErrInvalidEvent)
	require.ErrorIs(t, bus.BroadcastProjectError(pubsubtest.Project("p", 1001), "boom"), domain.ErrBroadcasterClosed)
}

// Close gives up at its deadline when the publisher never returns, and
// reports what was lost; the blocked Publish is released by closing the
// publisher, so no goroutine is left behind (goleak checks).
func TestCloseHonoursItsDeadlineWithABlockedPublisher(t *testing.T) {
	bus, gate, reg := newGatedBus(t, pubsub.Config{}, false)
	require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("p", 0)))
	<-gate.entered
	for i := 1; i < 10; i++ {
		require.NoError(t, bus.BroadcastProjectUpdate(pubsubtest.Project("p", i)))
	}
	err := closeBus(t, bus, 100*time.Millisecond)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "9 queued events not published")
	assert.Equal(t, float64(10), counterValue(t, reg, "statusbroadcaster_events_dropped_total", "closed"),
		"the 9 queued and the 1 in flight are counted as lost")
}

// stuckPublisher is a publisher whose Close does not return until
// released: an adapter that hangs on its way out.
type stuckPublisher struct {
	message.Publisher
	release chan struct{}
}

func (p stuckPublisher) Close() error {
	<-p.release
	return p.Publisher.Close()
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Close keeps its deadline whatever the adapter does: what does not stop
// in time is abandoned and named in the error (logged once, by the
// caller), and every
// subscription still ends.
func TestCloseAbandonsAnAdapterThatDoesNotStop(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	pub := stuckPublisher{Publisher: ch, release: make(chan struct{})}
	logs := &lockedBuffer{}
	bus, err := pubsub.New(pubsub.Config{}, pub, ch, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError})))
	require.NoError(t, err)
	in := subscribeAll(t, bus)
	require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 5*time.Second, time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- bus.Close(ctx) }()
	select {
	case err = <-closed:
	case <-time.After(3 * time.Second):
		close(pub.release)
		require.FailNow(t, "Close waited for the stuck publisher")
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "abandoned after the deadline: closing the publisher, waiting for the outbox's pending Publish")
	assert.NotContains(t, err.Error(), "closing the router", "the router stopped")
	assert.NotContains(t, logs.String(), "abandoned", "Close returns the error; it does not log it too")
	_, open := <-in.Events()
	assert.False(t, open, "the subscription ended")
	assert.Equal(t, err, bus.Close(context.Background()), "later calls return the first call's result")
	close(pub.release) // the abandoned goroutines end: goleak checks
}

// A message on the physical topic that is not a valid event is skipped and
// counted; the stream goes on.
func TestBadMessagesAreSkippedAndCounted(t *testing.T) {
	ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
	reg := prometheus.NewRegistry()
	bus, err := pubsub.New(pubsub.Config{Metrics: metrics.New(reg, nil)}, ch, ch, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, closeBus(t, bus, 5*time.Second)) }()
	in := subscribeAll(t, bus)
	require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 5*time.Second, time.Millisecond)

	good := message.NewMessage("1", []byte(`{"event":"project_updated","project":{"id":"x","status":"ready"}}`))
	good.Metadata.Set("project_id", "x")
	good.Metadata.Set("event_type", "project_updated")
	for _, bad := range []*message.Message{
		message.NewMessage("2", []byte("not json")),
		message.NewMessage("3", []byte(`{"event":"project_deleted","project":{"id":"x","status":"ready"}}`)),
		message.NewMessage("4", []byte(`{"event":"project_updated","project":{"id":"x:y","status":"ready"}}`)),
		message.NewMessage("5", []byte(`{"event":"project_updated","project":{"id":"x","status":"ready"}}`)), // no metadata
	} {
		require.NoError(t, ch.Publish(pubsub.DefaultTopic, bad))
	}
	require.NoError(t, ch.Publish(pubsub.DefaultTopic, good))
	select {
	case ev := <-in.Events():
		assert.Equal(t, "x", ev.Project.ID)
	case <-time.After(5 * time.Second):
		require.FailNow(t, "the good message after the bad ones was not delivered")
	}
	assert.Equal(t, float64(4), counterValue(t, reg, "statusbroadcaster_bad_messages_total", ""))
}

func TestConfigValidation(t *testing.T) {
	_, err := pubsub.NewInMemory(pubsub.Config{Topic: "projects:*"}, nil)
	assert.Error(t, err, "a topic Kafka would refuse")
	_, err = pubsub.NewInMemory(pubsub.Config{RetryMin: time.Second, RetryMax: time.Millisecond}, nil)
	assert.Error(t, err)
	_, err = pubsub.New(pubsub.Config{}, nil, nil, nil)
	assert.Error(t, err)
}

// counterValue returns a counter's value, summed over series whose label
// "reason" equals reason (any series when reason is "").
func counterValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	return metricValue(t, reg, name, reason)
}

// metricValue returns the value of a counter or gauge, summed over series
// whose label "reason" equals reason (any series when reason is "").
func metricValue(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := reason == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					match = true
				}
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}
