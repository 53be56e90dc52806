package pubsub

import (
	"context"
	"errors"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// direct is the in-memory Watermill Pub/Sub of NewInMemory: Publish hands
// each message to every subscriber of its topic from the publishing
// goroutine itself and waits for its ack (a nack sends it again), so one
// publishing goroutine (the outbox) keeps broadcast order.
//
// It does what gochannel does with BlockPublishUntilSubscriberAck, minus
// the two goroutines gochannel starts for every message (one per publish,
// one per subscriber) and the two hand-offs they add to every message's
// way in and to its ack's way back: each hand-off is a goroutine waiting
// for a CPU, which on a busy machine is where the latency tail comes from
// (BenchmarkHandOffLatency).
type direct struct {
	mu     sync.RWMutex
	subs   map[string][]*directSub
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
}

type directSub struct {
	out     chan *message.Message
	ctx     context.Context
	stopped chan struct{} // the subscriber's context ended or the Pub/Sub closed

	sending  sync.Mutex // held while sending on out, and to close it
	outClose bool       // out is closed
}

func newDirect() *direct {
	return &direct{subs: map[string][]*directSub{}, done: make(chan struct{})}
}

var errDirectClosed = errors.New("pubsub: in-memory Pub/Sub closed")

// Publish delivers msgs in order to every subscriber of topic, each
// message once it has acknowledged the previous one. Messages of a topic
// nobody subscribes to are dropped, as with gochannel.
func (d *direct) Publish(topic string, msgs ...*message.Message) error {
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return errDirectClosed
	}
	subs := d.subs[topic]
	d.mu.RUnlock()
	for _, msg := range msgs {
		for _, s := range subs {
			s.deliver(msg)
		}
	}
	return nil
}

// deliver sends a copy of msg (so that acks do not cross subscribers) and
// waits for its ack, resending on nack, until the subscriber stops.
func (s *directSub) deliver(msg *message.Message) {
	for {
		m := msg.Copy()
		ctx, cancel := context.WithCancel(s.ctx)
		m.SetContext(ctx)
		s.sending.Lock()
		if s.outClose {
			s.sending.Unlock()
			cancel()
			return
		}
		select {
		case s.out <- m:
			s.sending.Unlock()
		case <-s.stopped:
			s.sending.Unlock()
			cancel()
			return
		}
		select {
		case <-m.Acked():
			cancel()
			return
		case <-m.Nacked():
			cancel()
		case <-s.stopped:
			cancel()
			return
		}
	}
}

// Subscribe returns the messages published to topic from now on, until
// ctx ends or the Pub/Sub closes; then the channel is closed.
func (d *direct) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errDirectClosed
	}
	s := &directSub{out: make(chan *message.Message), ctx: ctx, stopped: make(chan struct{})}
	d.subs[topic] = append(d.subs[topic], s)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		select {
		case <-ctx.Done():
		case <-d.done:
		}
		d.mu.Lock()
		list := d.subs[topic]
		for i, x := range list {
			if x == s {
				d.subs[topic] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		d.mu.Unlock()
		close(s.stopped) // a send in progress gives up: the lock is free soon
		s.sending.Lock()
		s.outClose = true
		close(s.out)
		s.sending.Unlock()
	}()
	return s.out, nil
}

// Close stops every subscription (their channels close) and makes later
// Publish and Subscribe calls fail.
func (d *direct) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.done)
	d.mu.Unlock()
	d.wg.Wait()
	return nil
}
