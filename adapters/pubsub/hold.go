package pubsub

import (
	"errors"
	"sync"

	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// errClosedWhileHolding is returned by the router handler for a message
// held back when the Bus closes: it is not acknowledged.
var errClosedWhileHolding = errors.New("pubsub: closed before any inbox subscribed; message not acknowledged")

// hold implements Config.HoldUntilSubscribed: released is closed when an
// inbox first subscribes to a topic (at once when not holding).
type hold struct {
	released chan struct{}
	once     *sync.Once
}

func newHold(holding bool) hold {
	h := hold{released: make(chan struct{}), once: &sync.Once{}}
	if !holding {
		h.release()
	}
	return h
}

func (h hold) release() { h.once.Do(func() { close(h.released) }) }

// wait blocks until released, or returns an error when closed ends first.
func (h hold) wait(closed <-chan struct{}) error {
	select {
	case <-h.released:
		return nil
	default:
	}
	select {
	case <-h.released:
		return nil
	case <-closed:
		return errClosedWhileHolding
	}
}

// wrap returns in, made to release the hold when it subscribes.
func (h hold) wrap(in ports.Inbox) ports.Inbox {
	select {
	case <-h.released:
		return in
	default:
		return releasingInbox{Inbox: in, release: h.release}
	}
}

// releasingInbox releases the hold on its first successful subscription.
type releasingInbox struct {
	ports.Inbox
	release func()
}

func (in releasingInbox) SubscribeToProject(projectID string) error {
	err := in.Inbox.SubscribeToProject(projectID)
	if err == nil {
		in.release()
	}
	return err
}

func (in releasingInbox) SubscribeToAllProjects() error {
	err := in.Inbox.SubscribeToAllProjects()
	if err == nil {
		in.release()
	}
	return err
}
