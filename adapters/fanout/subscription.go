package fanout

import (
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

	// Guarded by hub.mu.
	topics   map[domain.Topic]struct{}
	wildcard bool
	err      error
}

func newEntryQueue(size int) *coalesce.Queue[*Entry] {
	return coalesce.New(size, (*Entry).ProjectID)
}

// Ready has a value when entries may be queued.
func (s *Subscription) Ready() <-chan struct{} { return s.queue.Ready() }

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

// Take appends every queued entry to dst, in order, and returns it.
func (s *Subscription) Take(dst []*Entry) []*Entry { return s.queue.Take(dst, 0) }

// Pending returns the number of queued entries.
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
	if _, ok := s.topics[t]; ok {
		return nil
	}
	s.topics[t] = struct{}{}
	h.indexLocked(s, t)
	return nil
}

// Remove stops selecting t and drops the queued entries that no longer
// match any selected topic. Removing a topic that is not selected does
// nothing.
func (s *Subscription) Remove(t domain.Topic) {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := s.topics[t]; !ok || s.err != nil {
		return
	}
	delete(s.topics, t)
	h.unindexLocked(s, t)
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
