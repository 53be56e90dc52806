package pubsub

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
)

// errBusClosed is returned by the direct publisher once the Bus is closing.
var errBusClosed = errors.New("pubsub: bus closed")

// Publisher returns a Publisher that hands messages straight to the Bus's
// own publisher (gochannel or Kafka), on the Bus's physical topic, without
// the outbox: Publish returns once the pub/sub has taken them (Kafka: the
// brokers acknowledged them), or with an error. It is for a component that
// keeps events durably itself and publishes them at least once — the
// transactional outbox's forwarder (adapters/postgres) — so that it
// acknowledges a row only once the event is really published.
//
// Messages the pub/sub refuses for good (a RejectedError) are dropped,
// logged and counted as "rejected", and Publish succeeds for them: a
// forwarder must not retry them forever. Messages must be the codec's
// (codec.NewMessage), for cfg.Topic. Publish
// waits until the router runs (in memory, a message published before
// would be lost) or the first message's context ends, and fails once the
// Bus is closing; Close does nothing
// (the Bus owns its publisher). Close the component before the Bus.
func (b *Bus) Publisher() message.Publisher { return directPublisher{b} }

type directPublisher struct{ b *Bus }

func (p directPublisher) Publish(topic string, msgs ...*message.Message) error {
	b := p.b
	if topic != b.cfg.Topic {
		return fmt.Errorf("pubsub: publish to %q: this Bus publishes on %q", topic, b.cfg.Topic)
	}
	var gone <-chan struct{} // the caller gave up (a forwarder closing)
	if len(msgs) > 0 {
		gone = msgs[0].Context().Done()
	}
	select {
	case <-b.router.Running():
	case <-b.closed:
		return errBusClosed
	case <-gone:
		return fmt.Errorf("pubsub: router not running yet: %w", msgs[0].Context().Err())
	}
	select {
	case <-b.closed:
		return errBusClosed
	default:
	}
	err := b.pub.Publish(topic, msgs...)
	var rejected *RejectedError
	if errors.As(err, &rejected) {
		// Refused for good (too large, a policy, an ACL): publishing them
		// again cannot succeed, and a forwarder that retried them would
		// hold up every event behind them, of every project. Dropped,
		// logged and counted, as the outbox does; the others go on.
		kept := b.outbox.dropRejected(slices.Clone(msgs), rejected)
		if err = rejected.Temporary; err == nil {
			b.cfg.Metrics.Published(len(kept))
			return nil
		}
	}
	if err != nil {
		b.cfg.Metrics.PublishFailed(len(msgs))
		return err
	}
	b.cfg.Metrics.Published(len(msgs))
	return nil
}

func (directPublisher) Close() error { return nil }

// CheckMessage returns an error wrapping domain.ErrInvalidEvent when msg
// (the codec's) would make a record larger than the Bus's pub/sub takes
// (Config.MaxMessageBytes, as its adapter measures records): the check
// Broadcast* makes, for a component that keeps events to publish them
// later through Publisher — the transactional outbox refuses such an event
// in its transaction, rather than commit one that would be dropped when
// forwarded.
func (b *Bus) CheckMessage(msg *message.Message) error { return b.outbox.checkSize(msg) }

// uuidWindow remembers the last n message UUIDs it saw, to skip the
// repeats of an at-least-once source (the transactional outbox publishes a
// message again, same UUID, after a crash between publishing and
// acknowledging it).
type uuidWindow struct {
	mu   sync.Mutex
	seen map[string]struct{}
	ring []string
	next int
}

func newUUIDWindow(n int) *uuidWindow {
	return &uuidWindow{seen: make(map[string]struct{}, n), ring: make([]string, n)}
}

// repeat reports whether uuid was seen among the last n, and remembers it.
func (w *uuidWindow) repeat(uuid string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.seen[uuid]; ok {
		return true
	}
	if old := w.ring[w.next]; old != "" {
		delete(w.seen, old)
	}
	w.ring[w.next] = uuid
	w.seen[uuid] = struct{}{}
	w.next = (w.next + 1) % len(w.ring)
	return false
}

// Topic returns the physical topic the Bus publishes and consumes.
func (b *Bus) Topic() string { return b.cfg.Topic }
