package pubsub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// BenchmarkBroadcast measures what a caller of BroadcastProjectUpdate pays:
// validation, encoding and queueing. The publisher is held blocked, so the
// figure is the caller's own cost, not shared with a publishing loop.
func BenchmarkBroadcast(b *testing.B) {
	bus, _, _ := newGatedBus(b, pubsub.Config{OutboxCapacity: 1 << 22}, false)
	p := pubsubtest.Project("p", 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := bus.BroadcastProjectUpdate(p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = closeBus(b, bus, 10*time.Millisecond) // reports the queued events as lost, as it should
}

// BenchmarkEndToEndInMemory measures broadcast → gochannel → router → hub →
// inbox, per event, with one wildcard reader. The broadcaster runs flat out,
// so a reader that falls behind is coalesced: the benchmark ends when the
// last event arrives and reports the share of events the reader received.
func BenchmarkEndToEndInMemory(b *testing.B) {
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer bus.Close(context.Background())
	in, _ := bus.NewInbox()
	defer in.Close()
	_ = in.SubscribeToAllProjects()
	received := 0
	done := make(chan struct{})
	b.ReportAllocs()
	b.ResetTimer()
	go func() {
		defer close(done)
		for ev := range in.Events() {
			received++
			if pubsubtest.Seq(ev) == b.N-1 {
				return
			}
		}
	}()
	for i := 0; i < b.N; i++ {
		_ = bus.BroadcastProjectUpdate(pubsubtest.Project(fmt.Sprintf("p%d", i%8), i))
	}
	<-done
	b.ReportMetric(float64(received)/float64(b.N), "delivered/op")
}

// BenchmarkGoChannelOrder measures the flaw of Watermill's gochannel that
// the in-memory adapter works around: with the default config, a batch of
// rapid publishes reaches a subscriber out of order. It reports how many of
// b.N events arrive out of order with the default config and with ours
// (BlockPublishUntilSubscriberAck, one publishing goroutine).
func BenchmarkGoChannelOrder(b *testing.B) {
	for _, c := range []struct {
		name string
		cfg  gochannel.Config
	}{
		{"default", gochannel.Config{}},
		{"block-until-ack", gochannel.Config{BlockPublishUntilSubscriberAck: true}},
	} {
		b.Run(c.name, func(b *testing.B) {
			ch := gochannel.NewGoChannel(c.cfg, nil)
			defer ch.Close()
			msgs, err := ch.Subscribe(context.Background(), pubsub.DefaultTopic)
			if err != nil {
				b.Fatal(err)
			}
			outOfOrder, last := 0, -1
			done := make(chan struct{})
			b.ResetTimer()
			go func() {
				defer close(done)
				for i := 0; i < b.N; i++ {
					select {
					case m := <-msgs:
						ev, _, err := codec.FromMessage(m)
						if err != nil {
							panic(err)
						}
						n := pubsubtest.Seq(ev)
						if n < last {
							outOfOrder++
						}
						last = max(last, n)
						m.Ack()
					case <-time.After(10 * time.Second):
						return
					}
				}
			}()
			for i := 0; i < b.N; i++ {
				m, _ := codec.NewMessage(domain.Event{Type: domain.EventProjectUpdated, Project: pubsubtest.Project("p", i)})
				if err := ch.Publish(pubsub.DefaultTopic, []*message.Message{m}...); err != nil {
					b.Fatal(err)
				}
			}
			<-done
			b.ReportMetric(float64(outOfOrder), "out-of-order")
		})
	}
}
