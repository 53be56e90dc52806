package pubsub

import (
	"context"
	"fmt"
	"sync"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// errClosedWhileHolding is returned by the router handler for a message
// not yet received by a reader when the Bus closes: it is not
// acknowledged. It wraps context.Canceled, which Watermill's router takes
// as a shutdown: it nacks the message without logging an error each time.
var errClosedWhileHolding = fmt.Errorf("pubsub: closed before a reader received the message; not acknowledged: %w", context.Canceled)

// readers implements Config.AckAfterRead. It knows the inboxes of the Bus
// and their topics; the router handler asks it to dispatch a message and
// to wait until the readers it went to have received it.
//
// mu orders dispatches (read lock) against changes of topics (write lock),
// so that the inboxes a dispatch waits for are exactly those the hub
// queued the entry for.
type readers struct {
	enabled bool

	mu      sync.RWMutex
	inboxes map[*ackInbox]struct{}
	// subscribed is closed and replaced whenever an inbox selects a topic.
	subscribed chan struct{}
}

func newReaders(enabled bool) *readers {
	return &readers{enabled: enabled, inboxes: map[*ackInbox]struct{}{}, subscribed: make(chan struct{})}
}

// wrap returns in, registered when the readers are enabled.
func (r *readers) wrap(in *fanout.Inbox) ports.Inbox {
	if !r.enabled {
		return in
	}
	a := &ackInbox{Inbox: in, r: r, topics: map[domain.Topic]struct{}{}, pending: map[*pendingRead]struct{}{}}
	r.mu.Lock()
	r.inboxes[a] = struct{}{}
	r.mu.Unlock()
	return a
}

// listeningLocked reports whether an open inbox selects a topic. The
// caller holds mu.
func (r *readers) listeningLocked() bool {
	for a := range r.inboxes {
		if len(a.topics) > 0 && !ended(a.Inbox) {
			return true
		}
	}
	return false
}

// awaitListener blocks until an open inbox selects a topic, or returns an
// error when closed ends first.
func (r *readers) awaitListener(closed <-chan struct{}) error {
	for {
		r.mu.RLock()
		ok, wake := r.listeningLocked(), r.subscribed
		r.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-wake:
		case <-closed:
			return errClosedWhileHolding
		}
	}
}

// deliver dispatches ev through hub and returns once a reader has received
// it: every inbox the hub queued it for has handed it to its reader, ended
// (closed, or too slow), or dropped it unread when its reader unsubscribed,
// and at least one of them handed it over. When none did, it dispatches it again
// as soon as an inbox listens. An event no listening inbox selects is done
// at once (the readers do not want it). While no inbox listens it waits;
// it returns errClosedWhileHolding when closed ends first.
func (r *readers) deliver(hub *fanout.Hub, ev domain.Event, data []byte, closed <-chan struct{}) error {
	for {
		if err := r.awaitListener(closed); err != nil {
			return err
		}
		r.mu.RLock()
		if !r.listeningLocked() {
			r.mu.RUnlock()
			continue
		}
		e := hub.Dispatch(ev, data)
		var waits []*pendingRead
		if e != nil {
			for a := range r.inboxes {
				if !ended(a.Inbox) && a.Inbox.Selects(ev.Project.ID) {
					waits = append(waits, a.expect(e.Seq, ev.Project.ID))
				}
			}
		}
		r.mu.RUnlock()
		if e == nil {
			return errClosedWhileHolding // the hub closed
		}
		if len(waits) == 0 {
			return nil
		}
		got, err := r.awaitReceived(waits, closed)
		if err != nil || got {
			return err
		}
	}
}

// pendingRead is an entry queued for an inbox, which a dispatch waits for
// the reader to receive.
type pendingRead struct {
	inbox     *ackInbox
	seq       uint64
	projectID string
	dropped   chan struct{} // closed when an unsubscribe dropped it
}

// awaitReceived waits until each inbox has handed its entry to its reader,
// ended, or dropped it (an unsubscribe), and reports whether any handed it
// over. It forgets the waits.
func (r *readers) awaitReceived(waits []*pendingRead, closed <-chan struct{}) (bool, error) {
	defer func() {
		for _, w := range waits {
			w.inbox.forget(w)
		}
	}()
	got := false
	for _, w := range waits {
		for {
			received, over, changed := r.state(w)
			if over {
				got = got || received
				break
			}
			select {
			case <-changed:
			case <-w.inbox.Done():
			case <-w.dropped:
			case <-closed:
				return false, errClosedWhileHolding
			}
		}
	}
	return got, nil
}

// state says whether w's entry was received, whether the wait is over, and
// what to wait on if not. Under r.mu, so that an unsubscribe is either not
// begun or complete: entries reach the reader in order, so the read mark
// passes w only once w was received (or superseded by a newer event of its
// project that was) — unless an unsubscribe dropped it, which then has
// closed w.dropped.
func (r *readers) state(w *pendingRead) (received, over bool, changed <-chan struct{}) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	select {
	case <-w.dropped:
		return false, true, nil
	default:
	}
	read, changed := w.inbox.Received()
	if read >= w.seq {
		return true, true, nil
	}
	return false, ended(w.inbox.Inbox), changed
}

func ended(in *fanout.Inbox) bool {
	select {
	case <-in.Done():
		return true
	default:
		return false
	}
}

// ackInbox is an inbox of a Bus that acknowledges after read: it keeps
// readers informed of its topics, and knows the entries dispatches wait
// for it to hand over, so that an unsubscribe that drops one tells its
// dispatch (even if the reader subscribes again at once).
type ackInbox struct {
	*fanout.Inbox
	r      *readers
	topics map[domain.Topic]struct{} // guarded by r.mu

	pendingMu sync.Mutex
	pending   map[*pendingRead]struct{}
}

// expect registers a wait for the entry seq of projectID, just queued for
// the inbox. The caller holds r.mu, for reading at least.
func (a *ackInbox) expect(seq uint64, projectID string) *pendingRead {
	w := &pendingRead{inbox: a, seq: seq, projectID: projectID, dropped: make(chan struct{})}
	a.pendingMu.Lock()
	a.pending[w] = struct{}{}
	a.pendingMu.Unlock()
	return w
}

func (a *ackInbox) forget(w *pendingRead) {
	a.pendingMu.Lock()
	delete(a.pending, w)
	a.pendingMu.Unlock()
}

func (a *ackInbox) SubscribeToProject(projectID string) error {
	return a.add(domain.ProjectTopic(projectID), func() error { return a.Inbox.SubscribeToProject(projectID) })
}

func (a *ackInbox) SubscribeToAllProjects() error {
	return a.add(domain.AllProjects, a.Inbox.SubscribeToAllProjects)
}

func (a *ackInbox) add(t domain.Topic, subscribe func() error) error {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	if err := subscribe(); err != nil {
		return err
	}
	a.topics[t] = struct{}{}
	close(a.r.subscribed)
	a.r.subscribed = make(chan struct{})
	return nil
}

func (a *ackInbox) UnsubscribeFromProject(projectID string) {
	a.remove(domain.ProjectTopic(projectID), func() { a.Inbox.UnsubscribeFromProject(projectID) })
}

func (a *ackInbox) UnsubscribeFromAllProjects() {
	a.remove(domain.AllProjects, a.Inbox.UnsubscribeFromAllProjects)
}

func (a *ackInbox) remove(t domain.Topic, unsubscribe func()) {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	unsubscribe()
	delete(a.topics, t)
	// The unsubscribe dropped the entries of the projects the inbox no
	// longer selects that its reader had not received.
	read, _ := a.Inbox.Received()
	a.pendingMu.Lock()
	defer a.pendingMu.Unlock()
	for w := range a.pending {
		if read < w.seq && !a.Inbox.Selects(w.projectID) {
			close(w.dropped)
			delete(a.pending, w)
		}
	}
}

// Close closes the inbox and forgets it.
func (a *ackInbox) Close() error {
	err := a.Inbox.Close()
	a.r.mu.Lock()
	delete(a.r.inboxes, a)
	a.r.mu.Unlock()
	return err
}
