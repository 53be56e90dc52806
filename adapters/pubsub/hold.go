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
	a := &ackInbox{Inbox: in, r: r, topics: map[domain.Topic]struct{}{}}
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
// it: every inbox the hub queued it for has handed it to its reader, or
// ended (closed, or too slow) or stopped selecting its project, and at
// least one of them handed it over. When none did, it dispatches it again
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
		var queued []*fanout.Inbox
		if e != nil {
			for a := range r.inboxes {
				if !ended(a.Inbox) && a.Inbox.Selects(ev.Project.ID) {
					queued = append(queued, a.Inbox)
				}
			}
		}
		r.mu.RUnlock()
		if e == nil {
			return errClosedWhileHolding // the hub closed
		}
		if len(queued) == 0 {
			return nil
		}
		got, err := awaitReceived(queued, e.Seq, ev.Project.ID, closed)
		if err != nil || got {
			return err
		}
	}
}

// awaitReceived waits until each inbox has handed the entry seq (of
// projectID) to its reader, ended, or stopped selecting projectID, and
// reports whether any handed it over.
func awaitReceived(inboxes []*fanout.Inbox, seq uint64, projectID string, closed <-chan struct{}) (bool, error) {
	got := false
	for _, in := range inboxes {
		for {
			read, changed := in.Received()
			if read >= seq {
				got = true
				break
			}
			if ended(in) || !in.Selects(projectID) {
				break
			}
			select {
			case <-changed:
			case <-in.Done():
			case <-closed:
				return false, errClosedWhileHolding
			}
		}
	}
	return got, nil
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
// readers informed of its topics.
type ackInbox struct {
	*fanout.Inbox
	r      *readers
	topics map[domain.Topic]struct{} // guarded by r.mu
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
}

// Close closes the inbox and forgets it.
func (a *ackInbox) Close() error {
	err := a.Inbox.Close()
	a.r.mu.Lock()
	delete(a.r.inboxes, a)
	a.r.mu.Unlock()
	return err
}
