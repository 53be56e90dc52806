package fanout

import (
	"errors"
	"sync"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Inbox is the Go form of a Phoenix process subscribed through the original
// module: one channel of events, and topics added and removed at run time
// with the same names as subscribe_to_project/1 and friends. It implements
// ports.Inbox.
//
// An event whose project matches several of the inbox's topics (its
// project's topic and "projects:*") arrives once. Events of one project
// arrive in the order they were broadcast. A reader that falls far behind
// first has its queue coalesced to the latest event per project; if even
// that does not fit, the inbox ends (Events is closed, Err returns
// ErrSlowSubscriber).
type Inbox struct {
	sub     *Subscription
	events  chan domain.Event
	changed chan struct{} // a topic was removed: re-check the event in hand (unbuffered, see remove)
	exited  chan struct{} // closed when pump has returned
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	read    readMark // how far the reader has got; see Received
}

// NewInbox returns an inbox with no topics. Close it when done.
func (h *Hub) NewInbox(queueSize int) (*Inbox, error) {
	sub, err := h.Subscribe(SubscribeOptions{QueueSize: queueSize})
	if err != nil {
		return nil, err
	}
	in := &Inbox{
		sub:     sub,
		events:  make(chan domain.Event),
		changed: make(chan struct{}),
		exited:  make(chan struct{}),
		stop:    make(chan struct{}),
	}
	in.wg.Add(1)
	go in.pump()
	return in, nil
}

// pumpBatch is the most entries the pump takes from the queue at a time.
const pumpBatch = 256

// pump moves entries from the subscription's queue to the channel. It owns
// the channel and closes it when the inbox ends.
func (in *Inbox) pump() {
	defer in.wg.Done()
	defer in.read.poke()
	defer close(in.exited)
	defer close(in.events)
	var batch []*Entry
	for {
		select {
		case <-in.stop:
			return
		case <-in.sub.Done():
			// The hub closed (a Bus flushes its outbox into the inboxes
			// first): hand over what is still queued, so that a reader
			// who drains Events gets every event broadcast before the
			// close. An inbox ended for being too slow hands over
			// nothing: it is behind anyway.
			if errors.Is(in.sub.Err(), ErrClosed) {
				in.deliverAll(in.sub.Take(nil))
			}
			return
		case <-in.changed:
			continue // nothing in hand to re-check
		case <-in.sub.Ready():
		}
		// A bounded batch: what the pump holds is outside the queue's
		// coalescing, so a stalled reader must not pin a whole queue's
		// worth twice.
		batch = in.sub.take(batch[:0], pumpBatch)
		if !in.deliverAll(batch) {
			return
		}
		clear(batch)
	}
}

// deliverAll hands entries to the reader, in order; false means the inbox
// was closed meanwhile.
func (in *Inbox) deliverAll(entries []*Entry) bool {
	for _, e := range entries {
		if !in.deliver(e) {
			return false
		}
	}
	return true
}

// deliver hands e to the reader unless its topic was removed meanwhile. It
// waits for the reader or for Close, nothing else: an event in hand is
// delivered even if the hub closes meanwhile.
func (in *Inbox) deliver(e *Entry) bool {
	var ev domain.Event
	decoded := false
	for in.sub.Selects(e.ProjectID()) {
		if !decoded { // entries keep only the JSON: decode once per delivery
			ev, decoded = e.Event(), true
		}
		select {
		case in.events <- ev:
			in.read.advance(e.Seq)
			return true
		case <-in.changed:
			// Re-check: an unsubscribe may have removed e's topic.
		case <-in.stop:
			return false
		}
	}
	return true
}

// Events returns the channel events arrive on. It is closed when the inbox
// is closed or ended (see Err). When the hub closes (Bus.Close), the events
// queued for the inbox until then are delivered first — in memory that is
// every event the Bus flushed; with Kafka, every event read back from the
// broker before the close. Close the inbox when you stop reading.
func (in *Inbox) Events() <-chan domain.Event { return in.events }

// Err returns nil while the inbox is open, then why it ended: ErrClosed or
// ErrSlowSubscriber.
func (in *Inbox) Err() error { return in.sub.Err() }

// SubscribeToProject adds the topic "projects:<projectID>".
func (in *Inbox) SubscribeToProject(projectID string) error {
	if err := domain.ValidateProjectID(projectID); err != nil {
		return err
	}
	return in.sub.Add(domain.ProjectTopic(projectID))
}

// SubscribeToAllProjects adds the topic "projects:*".
func (in *Inbox) SubscribeToAllProjects() error { return in.sub.Add(domain.AllProjects) }

// UnsubscribeFromProject removes the topic "projects:<projectID>". Events
// of that project still queued are dropped, unless "projects:*" is still
// selected; once it returns, the reader receives no further event that
// matches only that topic.
func (in *Inbox) UnsubscribeFromProject(projectID string) {
	in.remove(domain.ProjectTopic(projectID))
}

// UnsubscribeFromAllProjects removes the topic "projects:*", with the same
// promise as UnsubscribeFromProject. Project topics stay selected.
func (in *Inbox) UnsubscribeFromAllProjects() { in.remove(domain.AllProjects) }

func (in *Inbox) remove(t domain.Topic) {
	in.sub.Remove(t)
	// The pump may hold an event it took from the queue before the removal,
	// having checked it still matched. Hand it a re-check and wait until it
	// has taken it: the pump always waits on changed, and the reader, when
	// it is this goroutine, is not receiving meanwhile, so the pump cannot
	// choose to send that event instead. (A buffered, non-blocking signal
	// left the pump free to pick either once the reader was back.)
	select {
	case in.changed <- struct{}{}:
	case <-in.exited:
	}
	in.read.poke()
}

// Received returns the Seq of the last entry this inbox handed to its
// reader, and a channel that is closed when that changes, when a topic is
// removed, or when the inbox ends. Entries reach the reader in Seq order,
// so every entry queued for the inbox up to that Seq has been received,
// superseded by a newer event of its project that was, or dropped by an
// unsubscribe (which a caller that needs to know must tell apart itself).
// A consumer that acknowledges what its readers got (a Kafka consumer
// group) waits on it.
func (in *Inbox) Received() (seq uint64, changed <-chan struct{}) { return in.read.get() }

// Done is closed once the inbox has ended and its channel is closed; from
// then on Received no longer changes.
func (in *Inbox) Done() <-chan struct{} { return in.exited }

// Selects reports whether an event of projectID matches one of the
// inbox's topics.
func (in *Inbox) Selects(projectID string) bool { return in.sub.Selects(projectID) }

// readMark is the Seq an inbox's reader has got to, with a wake-up for
// those waiting on it. The channel is made only when someone waits, so an
// inbox nobody watches pays a lock per event and nothing more.
type readMark struct {
	mu   sync.Mutex
	seq  uint64
	wake chan struct{}
}

func (m *readMark) get() (uint64, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.wake == nil {
		m.wake = make(chan struct{})
	}
	return m.seq, m.wake
}

func (m *readMark) advance(seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq = max(m.seq, seq)
	m.wakeLocked()
}

// poke wakes the waiters without a change of Seq.
func (m *readMark) poke() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wakeLocked()
}

func (m *readMark) wakeLocked() {
	if m.wake != nil {
		close(m.wake)
		m.wake = nil
	}
}

// Close ends the inbox, releases its place in the hub and waits for its
// goroutine to finish; Events is closed then. It is idempotent.
func (in *Inbox) Close() error {
	in.once.Do(func() {
		close(in.stop)
		in.sub.Close()
	})
	in.wg.Wait()
	return nil
}
