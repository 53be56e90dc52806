package pubsub_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// BenchmarkHandOffLatency measures where a single event's latency goes,
// one event at a time (as the ORDER scenario), in the same run, so that the
// figures can be compared on a busy machine: p50 and p99 in µs.
//
//   - bus: BroadcastProjectUpdate → outbox → gochannel → router handler →
//     hub → a subscription's Ready wakes its reader (what a stream waits on).
//   - gochannel+router: Publish → gochannel → router handler, Watermill
//     alone: gochannel (BlockPublishUntilSubscriberAck) starts two
//     goroutines per message and waits for the ack, the router starts one
//     per message. Each is a hand-off that waits for a CPU on a busy
//     machine.
//   - one hand-off: a goroutine wakes another through a channel, the floor
//     of every hop.
func BenchmarkHandOffLatency(b *testing.B) {
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		if len(lat) == 0 {
			return
		}
		us := func(q float64) float64 {
			return float64(lat[min(len(lat)-1, int(float64(len(lat))*q))]) / 1e3
		}
		b.ReportMetric(us(0.50), "p50-µs")
		b.ReportMetric(us(0.99), "p99-µs")
		b.ReportMetric(us(0.999), "p999-µs")
	}

	b.Run("bus", func(b *testing.B) {
		bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer bus.Close(context.Background())
		sub, err := bus.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, QueueSize: 1024})
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
		var batch []*fanout.Entry
		lat := make([]time.Duration, 0, b.N)
		for i := 0; b.Loop(); i++ {
			start := time.Now()
			if err := bus.BroadcastProjectUpdate(pubsubtest.Project("p", i)); err != nil {
				b.Fatal(err)
			}
			for len(batch) == 0 {
				<-sub.Ready()
				batch = sub.Take(batch[:0])
			}
			lat = append(lat, time.Since(start))
			batch = batch[:0]
		}
		report(b, lat)
	})

	b.Run("gochannel+router", func(b *testing.B) {
		ch := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true}, nil)
		router, err := message.NewRouter(message.RouterConfig{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		got := make(chan struct{}, 1)
		router.AddConsumerHandler("h", "t", ch, func(*message.Message) error {
			got <- struct{}{}
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = router.Run(ctx) }()
		<-router.Running()
		defer func() { cancel(); <-done; _ = ch.Close() }()
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			start := time.Now()
			go func() { _ = ch.Publish("t", message.NewMessage("id", nil)) }()
			<-got
			lat = append(lat, time.Since(start))
		}
		report(b, lat)
	})

	b.Run("one hand-off", func(b *testing.B) {
		in, out := make(chan time.Time), make(chan time.Duration)
		go func() {
			for t := range in {
				out <- time.Since(t)
			}
		}()
		defer close(in)
		lat := make([]time.Duration, 0, b.N)
		for b.Loop() {
			in <- time.Now()
			lat = append(lat, <-out)
		}
		report(b, lat)
	})
}
