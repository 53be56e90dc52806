package fanout

import (
	"slices"
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
	// backlog is the snapshot or replay computed by Subscribe, until Take
	// takes it. It is not bounded by the queue (see Hub.Subscribe).
	backlog atomic.Pointer[[]*Entry]

	// Guarded by hub.mu.
	topics   map[domain.Topic]struct{}
	wildcard bool
	err      error
}

func newEntryQueue(size int) *coalesce.Queue[*Entry] {
	return coalesce.New(size, (*Entry).ProjectID)
}

// closedChan is always ready to receive from.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Ready returns a channel that has a value when entries may be queued: at
// once while the backlog (snapshot or replay) has not been taken, then
// whenever live entries arrive. Call it afresh for every wait (as a select
// case does) and Take after each receive; a receive may find nothing to
// take, so consumers loop.
func (s *Subscription) Ready() <-chan struct{} {
	if s.backlog.Load() != nil {
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

// Take appends the backlog, the first time, and then every queued entry to
// dst, in order, and returns it.
func (s *Subscription) Take(dst []*Entry) []*Entry { return s.take(dst, 0) }

// take is Take with at most max queued entries (all when max <= 0); the
// backlog always comes whole.
func (s *Subscription) take(dst []*Entry, max int) []*Entry {
	if b := s.backlog.Swap(nil); b != nil {
		dst = append(dst, *b...)
	}
	return s.queue.Take(dst, max)
}

// Pending returns the number of entries waiting to be taken.
func (s *Subscription) Pending() int {
	n := s.queue.Len()
	if b := s.backlog.Load(); b != nil {
		n += len(*b)
	}
	return n
}

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
	if _, ok := s.topics[t]; ok {
		return nil
	}
	s.topics[t] = struct{}{}
	h.indexLocked(s, t)
	return nil
}

// Remove stops selecting t and drops the queued entries (backlog included)
// that no longer match any selected topic. Removing a topic that is not selected does
// nothing.
func (s *Subscription) Remove(t domain.Topic) {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := s.topics[t]; !ok {
		return
	}
	delete(s.topics, t)
	if s.err == nil { // an ended subscription is out of the index already
		h.unindexLocked(s, t)
	}
	if t.IsWildcard() {
		s.wildcard = false
	}
	keep := func(e *Entry) bool { return s.selectsLocked(e.ProjectID()) }
	s.queue.Filter(keep)
	if b := s.backlog.Load(); b != nil {
		kept := slices.DeleteFunc(slices.Clone(*b), func(e *Entry) bool { return !keep(e) })
		s.backlog.CompareAndSwap(b, &kept) // fails only if Take took it meanwhile
	}
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
	_, ok := s.topics[domain.ProjectTopic(projectID)]
	return ok
}

// Close ends the subscription and releases its place in the hub. It is
// idempotent.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.endLocked(s, ErrClosed)
}
