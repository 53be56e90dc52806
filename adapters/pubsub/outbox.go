package pubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/coalesce"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// outbox queues encoded events and publishes them from one goroutine, in
// order, in batches, with retries. It never blocks its callers.
type outbox struct {
	cfg     Config
	pub     message.Publisher
	log     *slog.Logger
	metrics *metrics.Metrics
	queue   *coalesce.Queue[*message.Message]
	gate    <-chan struct{} // publishing starts when it is closed
	size    func(*message.Message) int

	// publishStart is when the pending Publish call started (UnixNano, 0
	// when none is pending); failing is set while a batch is being retried.
	publishStart atomic.Int64
	failing      atomic.Bool
	// inFlight is the size of the batch being published (0 when none).
	inFlight atomic.Int64

	mu       sync.Mutex
	closed   bool
	room     chan struct{} // closed and replaced whenever the loop takes a batch
	lastWarn time.Time     // throttles "outbox full" warnings
	quiet    int           // warnings suppressed since lastWarn

	stop  chan struct{} // Close was called: flush, then exit
	abort chan struct{} // the flush deadline passed: exit now
	done  chan struct{} // the loop exited
}

func newOutbox(cfg Config, pub message.Publisher, gate <-chan struct{}, log *slog.Logger, m *metrics.Metrics) *outbox {
	o := &outbox{
		cfg:     cfg,
		pub:     pub,
		log:     log,
		metrics: m,
		queue: coalesce.New(cfg.OutboxCapacity, func(msg *message.Message) string {
			return msg.Metadata.Get(codec.MetadataProjectID)
		}),
		gate:  gate,
		size:  messageSize,
		room:  make(chan struct{}),
		stop:  make(chan struct{}),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
	}
	if s, ok := pub.(RecordSizer); ok {
		o.size = s.RecordSize
	}
	go o.run()
	return o
}

// RecordSizer is implemented by publishers that know how large the record
// of a message is on their pub/sub (Kafka: key, value and headers, as the
// producer measures them against its limit). The outbox compares that size
// with Config.MaxMessageBytes when an event is broadcast; for other
// publishers it counts the payload and the metadata.
type RecordSizer interface {
	RecordSize(*message.Message) int
}

// messageSize is the size of a message where the publisher does not say:
// its payload and metadata.
func messageSize(msg *message.Message) int {
	n := len(msg.UUID) + len(msg.Payload)
	for k, v := range msg.Metadata {
		n += len(k) + len(v)
	}
	return n
}

// RejectedError is returned by a publisher whose pub/sub refused some
// messages for good — too large, invalid, forbidden by a policy or an ACL:
// publishing them again cannot succeed. The outbox drops them (logged with
// their project, counted as dropped "rejected") and goes on with the
// others. Temporary, when set, is the failure of the call that stopped it
// (the outbox retries the rest of the batch); otherwise every other
// message was published.
type RejectedError struct {
	// Rejected holds the reason each message was refused, by message UUID.
	Rejected map[string]error
	// Temporary is the failure that stopped the call, if any: the messages
	// not in Rejected are published again.
	Temporary error
}

func (e *RejectedError) Error() string {
	msg := fmt.Sprintf("%d messages rejected for good", len(e.Rejected))
	if e.Temporary != nil {
		msg += "; " + e.Temporary.Error()
	}
	return msg
}

// Unwrap returns Temporary.
func (e *RejectedError) Unwrap() error { return e.Temporary }

// enqueue validates and queues ev. Only invalid input, and a closed outbox
// (domain.ErrBroadcasterClosed), are errors.
func (o *outbox) enqueue(ev domain.Event) error {
	msg, err := codec.NewMessage(ev)
	if err != nil {
		o.metrics.Invalid()
		return err
	}
	if err := o.checkSize(msg); err != nil {
		o.metrics.Invalid()
		return err
	}
	var deadline time.Time
	o.mu.Lock()
	// A full outbox while the pub/sub keeps up is a burst: wait a little
	// for room rather than lose intermediate states. A full outbox while it
	// fails or hangs is an outage: coalesce at once.
	for o.queue.Full() && !o.closed && !o.stalled() {
		if deadline.IsZero() {
			deadline = time.Now().Add(o.cfg.FullWait)
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			break
		}
		room := o.room
		o.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-room:
		case <-t.C:
		}
		t.Stop()
		o.mu.Lock()
	}
	defer o.mu.Unlock()
	if o.closed {
		// Said to the caller, not logged: it decides (POST /events
		// answers 503).
		o.metrics.Dropped("closed", 1)
		return fmt.Errorf("pubsub: %s of project %q not broadcast: %w", ev.Type, ev.Project.ID, domain.ErrBroadcasterClosed)
	}
	coalesced, err := o.queue.Push(msg)
	if err != nil {
		// Nearly every queued event is the only one of its project: make
		// room by giving up the oldest.
		if old, ok := o.queue.EvictOldest(); ok {
			o.metrics.Dropped("evicted", 1)
			o.warnFullLocked(old.Metadata.Get(codec.MetadataProjectID))
		}
		coalesced, _ = o.queue.Push(msg)
	}
	o.metrics.Dropped("coalesced", coalesced)
	o.metrics.Broadcast(string(ev.Type))
	return nil
}

func (o *outbox) warnFullLocked(projectID string) {
	if time.Since(o.lastWarn) < time.Second {
		o.quiet++
		return
	}
	o.log.Warn("outbox full of distinct projects: oldest event dropped",
		"project_id", projectID, "capacity", o.cfg.OutboxCapacity, "suppressed", o.quiet)
	o.lastWarn, o.quiet = time.Now(), 0
}

// stallAfter is how long a Publish call may take before the pub/sub counts
// as stuck.
const stallAfter = 100 * time.Millisecond

// stalled reports whether the pub/sub is failing or stuck in Publish.
func (o *outbox) stalled() bool {
	if o.failing.Load() {
		return true
	}
	start := o.publishStart.Load()
	return start != 0 && time.Since(time.Unix(0, start)) > stallAfter
}

// take moves the next batch from the queue to the loop, unless the outbox
// was aborted. Under o.mu, as close's abort is: an event is always either
// queued or counted in flight when close takes stock of what is left.
// It wakes the broadcasts waiting for room.
func (o *outbox) take(batch []*message.Message) (_ []*message.Message, aborted bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	select {
	case <-o.abort:
		return batch, true
	default:
	}
	batch = o.queue.Take(batch, o.cfg.BatchSize)
	o.inFlight.Store(int64(len(batch)))
	if len(batch) > 0 {
		close(o.room)
		o.room = make(chan struct{})
	}
	return batch, false
}

func (o *outbox) depth() int { return o.queue.Len() }

// run is the outbox loop, the only caller of Publish.
func (o *outbox) run() {
	defer close(o.done)
	// Until the gate opens there is nobody to publish to; Close, with
	// nothing queued, has nothing to wait for either.
	stop := o.stop
	for open := false; !open; {
		select {
		case <-o.gate:
			open = true
		case <-stop:
			if o.queue.Len() == 0 {
				return
			}
			stop = nil // flush what is queued once the gate opens
		case <-o.abort:
			return
		}
	}
	var batch []*message.Message
	for {
		var aborted bool
		batch, aborted = o.take(batch[:0])
		if aborted {
			return
		}
		if len(batch) == 0 {
			select {
			case <-o.queue.Ready():
				continue
			case <-o.stop:
				if o.queue.Len() == 0 {
					return
				}
				continue
			case <-o.abort:
				return
			}
		}
		if !o.publish(batch) {
			return
		}
		clear(batch)
	}
}

// publish publishes batch, retrying with exponential backoff until it
// succeeds or the outbox is aborted.
func (o *outbox) publish(batch []*message.Message) bool {
	backoff := o.cfg.RetryMin
	var failingSince time.Time
	defer o.inFlight.Store(0)
	defer o.failing.Store(false)
	for attempt := 1; ; attempt++ {
		o.publishStart.Store(time.Now().UnixNano())
		err := o.pub.Publish(o.cfg.Topic, batch...)
		o.publishStart.Store(0)
		if rejected := (*RejectedError)(nil); errors.As(err, &rejected) {
			batch = o.dropRejected(batch, rejected)
			err = rejected.Temporary
		}
		if err == nil {
			o.metrics.Published(len(batch))
			if attempt > 1 {
				o.log.Info("publishing recovered", "attempts", attempt, "outage", time.Since(failingSince).Round(time.Millisecond))
			}
			return true
		}
		o.metrics.PublishFailed(len(batch))
		o.failing.Store(true)
		if attempt == 1 {
			failingSince = time.Now()
		}
		// Log the first failure and then one in ten, not a line per retry.
		if attempt == 1 || attempt%10 == 0 {
			o.log.Error("publishing events failed; will retry", "error", err, "events", len(batch),
				"attempt", attempt, "retry_in", backoff, "queued", o.queue.Len())
		}
		select {
		case <-time.After(backoff):
		case <-o.abort:
			o.metrics.Dropped("closed", len(batch))
			return false
		}
		backoff = min(2*backoff, o.cfg.RetryMax)
	}
}

// checkSize returns an error wrapping domain.ErrInvalidEvent when msg would
// make a record over MaxMessageBytes, which its pub/sub would refuse.
func (o *outbox) checkSize(msg *message.Message) error {
	if size := o.size(msg); size > o.cfg.MaxMessageBytes {
		return fmt.Errorf("%w: project %s: the event would make a record of %d bytes, over the limit of %d bytes (MaxMessageBytes); shorten it (the error message, the project's fields)",
			domain.ErrInvalidEvent, msg.Metadata.Get(codec.MetadataProjectID), size, o.cfg.MaxMessageBytes)
	}
	return nil
}

// dropRejected removes from batch the messages the pub/sub rejected for
// good, and logs and counts each. The others keep their order.
func (o *outbox) dropRejected(batch []*message.Message, rej *RejectedError) []*message.Message {
	kept := batch[:0]
	for _, msg := range batch {
		err, bad := rej.Rejected[msg.UUID]
		if !bad {
			kept = append(kept, msg)
			continue
		}
		o.log.Error("event rejected by the pub/sub for good; dropped", "error", err,
			"project_id", msg.Metadata.Get(codec.MetadataProjectID), "event", msg.Metadata.Get(codec.MetadataEventType),
			"bytes", o.size(msg))
	}
	dropped := len(batch) - len(kept)
	clear(batch[len(kept):])
	o.metrics.Dropped("rejected", dropped)
	o.inFlight.Store(int64(len(kept)))
	return kept
}

// close stops accepting events and waits until the queue is flushed or ctx
// ends. After ctx ends it aborts the loop and reports what was not
// published; the loop itself exits as soon as a pending Publish returns.
func (o *outbox) close(ctx context.Context) error {
	o.mu.Lock()
	already := o.closed
	o.closed = true
	o.mu.Unlock()
	if !already {
		close(o.stop)
	}
	select {
	case <-o.done:
		return nil
	case <-ctx.Done():
	}
	// Under o.mu, as the loop's take: once abort is closed the loop takes
	// nothing more, so what is left is the queue plus the batch in flight
	// (read before the abort ends its attempt).
	o.mu.Lock()
	inFlight := o.inFlight.Load()
	select {
	case <-o.abort:
	default:
		close(o.abort)
	}
	left := o.queue.Take(nil, 0)
	o.mu.Unlock()
	if len(left) == 0 && inFlight == 0 {
		return nil // the loop had nothing left to publish
	}
	o.metrics.Dropped("closed", len(left))
	if n := inFlight; n > 0 {
		return fmt.Errorf("outbox: %d queued events not published before the deadline, and %d still being published: %w", len(left), n, ctx.Err())
	}
	return fmt.Errorf("outbox: %d queued events not published before the deadline: %w", len(left), ctx.Err())
}
