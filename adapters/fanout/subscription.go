package fanout

import (
	"sync/atomic"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/coalesce"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Subscription is one subscriber's view of the hub: a set of topics and a
// bounded queue of the entries that matched them. Its consumer waits on
// Ready and Done, and drains the queue with Take. It is safe for concurrent
// use.
type Subscription struct {
	hub     *Hub
	queue   *coalesce.Queue[*Entry]
	done    chan struct{}
	resumed bool
	// backlogActive is set while the subscription reads a backlog (a
	// snapshot, a replay, a catch-up after being parked) rather than its
	// queue; it is out of the index meanwhile.
	backlogActive atomic.Bool
	backlogBytes  int
	park          bool // SubscribeOptions.ParkWhenFull

	// Guarded by hub.mu.
	topics   topicSet
	wildcard bool
	err      error
	mode     backlogMode
	cursor   uint64 // the backlog continues after this seq
	// vector, during a replay from a position in a partitioned log (see
	// CursorCodec), is that position: the backlog skips what lies before.
	vector []Position
	parked int // times parked
}

func newEntryQueue(size int) *coalesce.Queue[*Entry] {
	return coalesce.New(size, (*Entry).ProjectID)
}

// closedChan is always ready to receive from.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Ready returns a channel that has a value when entries may be queued: at
// once while a backlog (snapshot, replay or catch-up) lasts, then whenever
// live entries arrive. Call it afresh for every wait (as a select
// case does) and Take after each receive; a receive may find nothing to
// take, so consumers loop.
func (s *Subscription) Ready() <-chan struct{} {
	if s.backlogActive.Load() {
		return closedChan
	}
	return s.queue.Ready()
}

// Done is closed when the subscription has ended; Err says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns nil while the subscription is live, then ErrClosed or
// ErrSlowSubscriber.
func (s *Subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

// Resumed reports whether the subscription was resumed from
// SubscribeOptions.LastEventID (rather than given a snapshot or nothing).
func (s *Subscription) Resumed() bool { return s.resumed }

// Take appends the next entries to deliver to dst, in order, and returns
// it: the queued entries if there are any; otherwise, while a backlog lasts,
// its next chunk (about SubscribeOptions.BacklogBytes of event data). It
// may return nothing while the backlog lasts (the chunk it examined had
// nothing selected): consumers loop on Ready.
func (s *Subscription) Take(dst []*Entry) []*Entry { return s.take(dst, 0) }

// take is Take with at most max queued entries (all when max <= 0).
func (s *Subscription) take(dst []*Entry, max int) []*Entry {
	if s.queue.Len() > 0 || !s.backlogActive.Load() {
		return s.queue.Take(dst, max)
	}
	// The queue is empty and stays so until the backlog ends (the
	// subscription is out of the index meanwhile).
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.hub.nextBacklogLocked(s, dst)
}

// InBacklog reports whether the subscription is still reading a backlog
// (a snapshot, a replay, or the catch-up after it was parked) rather than
// live events.
func (s *Subscription) InBacklog() bool { return s.backlogActive.Load() }

// Parked returns how many times the hub has parked the subscription.
func (s *Subscription) Parked() int {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.parked
}

// Pending returns the number of queued entries waiting to be taken (a
// backlog, read lazily, is not counted).
func (s *Subscription) Pending() int { return s.queue.Len() }

// Add selects one more topic. Adding a selected topic does nothing.
func (s *Subscription) Add(t domain.Topic) error {
	if _, err := domain.ParseTopic(string(t)); err != nil {
		return err
	}
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.err != nil {
		return s.err
	}
	if !s.topics.add(t) {
		return nil
	}
	if s.mode == backlogNone { // while a backlog lasts, it joins the index at its end
		h.indexLocked(s, t)
	}
	return nil
}

// Remove stops selecting t and drops the queued entries that no longer
// match any selected topic (a backlog, read lazily, skips them too). Removing a topic that is not selected does
// nothing.
func (s *Subscription) Remove(t domain.Topic) {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if !s.topics.remove(t) {
		return
	}
	if s.err == nil { // an ended subscription is out of the index already
		h.unindexLocked(s, t)
	}
	if t.IsWildcard() {
		s.wildcard = false
	}
	s.queue.Filter(func(e *Entry) bool { return s.selectsLocked(e.ProjectID()) })
}

// Selects reports whether an event of projectID matches a selected topic.
func (s *Subscription) Selects(projectID string) bool {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.selectsLocked(projectID)
}

func (s *Subscription) selectsLocked(projectID string) bool {
	if s.wildcard {
		return true
	}
	return s.topics.has(domain.ProjectTopic(projectID))
}

// Close ends the subscription and releases its place in the hub. It is
// idempotent.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.endLocked(s, ErrClosed)
}

// Wake makes Ready have a value, so that a consumer waiting on it looks
// again (for something outside the subscription: a timer, a context). It
// may be called from any goroutine.
func (s *Subscription) Wake() { s.queue.Wake() }
