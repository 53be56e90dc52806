package fanout_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

var _ ports.Inbox = (*fanout.Inbox)(nil)

// liveness bounds waits for something that must happen; it is never a
// measurement.
const liveness = 10 * time.Second

func newInbox(t *testing.T, h *fanout.Hub, queueSize int) *fanout.Inbox {
	t.Helper()
	in, err := h.NewInbox(queueSize)
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// receive returns the next event as "a1" (see event), failing the test if
// none arrives or the channel is closed.
func receive(t *testing.T, in *fanout.Inbox) string {
	t.Helper()
	select {
	case ev, ok := <-in.Events():
		require.True(t, ok, "Events closed: %v", in.Err())
		return nameOf(ev)
	case <-time.After(liveness):
		require.FailNow(t, "no event")
		return ""
	}
}

func nameOf(ev domain.Event) string {
	id, v, _ := cutLast(ev.Project.Name, "/")
	return id + v
}

func cutLast(s, sep string) (string, string, bool) {
	for i := len(s) - len(sep); i >= 0; i-- {
		if s[i:i+len(sep)] == sep {
			return s[:i], s[i+len(sep):], true
		}
	}
	return s, "", false
}

// waitClosed drains Events until it is closed.
func waitClosed(t *testing.T, in *fanout.Inbox) {
	t.Helper()
	deadline := time.After(liveness)
	for {
		select {
		case _, ok := <-in.Events():
			if !ok {
				return
			}
		case <-deadline:
			require.FailNow(t, "Events not closed")
		}
	}
}

func TestInboxDeliversSelectedEvents(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.Err())
	require.NoError(t, in.SubscribeToProject("a"))

	ev := errorEvent(t, "a", 1, "Mix deps.get failed")
	h.Dispatch(ev, nil)
	select {
	case got := <-in.Events():
		assert.Equal(t, ev, got, "the full event, error included")
	case <-time.After(liveness):
		t.Fatal("no event")
	}

	dispatch(t, h, "b1 a2")
	assert.Equal(t, "a2", receive(t, in), "b is not selected")
}

func TestInboxOnceOnly(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToProject("a"))
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, in.SubscribeToProject("a"), "subscribing twice is harmless")

	dispatch(t, h, "a1 b1 a2")
	for _, want := range []string{"a1", "b1", "a2"} {
		assert.Equal(t, want, receive(t, in))
	}
	dispatch(t, h, "c1")
	assert.Equal(t, "c1", receive(t, in), "no duplicate before c1")
}

func TestInboxOrderPerProject(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToAllProjects())

	const n = 3_000
	go func() {
		for v := 1; v <= n; v++ {
			h.Dispatch(event(t, fmt.Sprintf("p%d", v%3), v), nil)
		}
	}()
	last := map[string]int{}
	for range n {
		var ev domain.Event
		select {
		case ev = <-in.Events():
		case <-time.After(liveness):
			t.Fatal("no event")
		}
		_, v, _ := cutLast(ev.Project.Name, "/")
		var ver int
		_, err := fmt.Sscan(v, &ver)
		require.NoError(t, err)
		require.Greater(t, ver, last[ev.Project.ID], "order of %s", ev.Project.ID)
		last[ev.Project.ID] = ver
	}
}

func TestInboxSubscribeRejectsInvalidIDs(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	for _, id := range []string{"", "*", "a:b", "a b", "a/b"} {
		assert.ErrorIs(t, in.SubscribeToProject(id), domain.ErrInvalidProject, "%q", id)
	}
	// A rejected id selected nothing: "*" did not become the wildcard.
	dispatch(t, h, "a1")
	require.NoError(t, in.SubscribeToProject("z"))
	dispatch(t, h, "z1")
	assert.Equal(t, "z1", receive(t, in))
}

func TestInboxUnsubscribeFromProject(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToProject("a"))
	require.NoError(t, in.SubscribeToProject("b"))

	dispatch(t, h, "a1")
	assert.Equal(t, "a1", receive(t, in))

	dispatch(t, h, "a2 a3") // queued or in hand, not yet read
	in.UnsubscribeFromProject("a")
	in.UnsubscribeFromProject("never-subscribed")
	in.UnsubscribeFromProject("a:b") // invalid: harmless
	dispatch(t, h, "a4 b1")
	assert.Equal(t, "b1", receive(t, in), "nothing of a after unsubscribing")
}

func TestInboxUnsubscribeDropsTheEventInHand(t *testing.T) {
	// The promise: once UnsubscribeFromProject returns, this goroutine
	// reads no event that matched only the removed topic — not even one
	// the inbox had already taken from its queue and is offering on the
	// channel. Every other iteration gives the inbox a moment to take it;
	// the rest unsubscribe at once, to vary the interleavings.
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToProject("b"))
	for i := 1; i <= 1_000; i++ {
		require.NoError(t, in.SubscribeToProject("a"))
		dispatch(t, h, fmt.Sprintf("a%d", i))
		if i%2 == 0 {
			time.Sleep(20 * time.Microsecond)
		}
		in.UnsubscribeFromProject("a")
		dispatch(t, h, fmt.Sprintf("b%d", i))
		require.Equal(t, fmt.Sprintf("b%d", i), receive(t, in), "iteration %d", i)
	}
}

func TestInboxUnsubscribeFromAllProjects(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, in.SubscribeToProject("b"))
	dispatch(t, h, "a1")
	assert.Equal(t, "a1", receive(t, in))

	dispatch(t, h, "a2 c1")
	in.UnsubscribeFromAllProjects()
	in.UnsubscribeFromAllProjects() // harmless
	dispatch(t, h, "a3 b1")
	assert.Equal(t, "b1", receive(t, in), "only the project topic is left")
}

func TestInboxUnsubscribeKeepsWhatAnotherTopicSelects(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, in.SubscribeToProject("a"))
	dispatch(t, h, "a1")
	in.UnsubscribeFromProject("a")
	assert.Equal(t, "a1", receive(t, in), "still selected by projects:*")
}

func TestInboxClose(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in, err := h.NewInbox(0)
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	dispatch(t, h, "a1 a2") // left unread

	require.NoError(t, in.Close())
	require.NoError(t, in.Close(), "idempotent")
	waitClosed(t, in)
	assert.ErrorIs(t, in.Err(), fanout.ErrClosed)
	assert.ErrorIs(t, in.SubscribeToProject("a"), fanout.ErrClosed)
	assert.ErrorIs(t, in.SubscribeToAllProjects(), fanout.ErrClosed)
	in.UnsubscribeFromProject("a")
	in.UnsubscribeFromAllProjects()
	dispatch(t, h, "a3") // the hub no longer delivers to it
}

func TestInboxCloseWhileReaderWaits(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in, err := h.NewInbox(0)
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToProject("a"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range in.Events() {
		}
	}()
	require.NoError(t, in.Close())
	select {
	case <-done:
	case <-time.After(liveness):
		t.Fatal("a blocked reader was not released by Close")
	}
}

func TestInboxConcurrentClose(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in, err := h.NewInbox(0)
	require.NoError(t, err)
	require.NoError(t, in.SubscribeToAllProjects())
	dispatch(t, h, "a1")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { assert.NoError(t, in.Close()) })
	}
	wg.Wait()
	waitClosed(t, in)
}

func TestHubCloseEndsInboxes(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	withTopic := newInbox(t, h, 0)
	require.NoError(t, withTopic.SubscribeToAllProjects())
	noTopic := newInbox(t, h, 0)
	unsubscribed := newInbox(t, h, 0)
	require.NoError(t, unsubscribed.SubscribeToProject("a"))
	unsubscribed.UnsubscribeFromProject("a")

	h.Close()
	for name, in := range map[string]*fanout.Inbox{"with topic": withTopic, "no topic": noTopic, "unsubscribed": unsubscribed} {
		t.Run(name, func(t *testing.T) {
			waitClosed(t, in)
			assert.ErrorIs(t, in.Err(), fanout.ErrClosed)
		})
	}
	_, err := h.NewInbox(0)
	assert.ErrorIs(t, err, fanout.ErrClosed)
}

func TestSlowInboxIsEndedOthersAreNot(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	slow := newInbox(t, h, 4)
	require.NoError(t, slow.SubscribeToAllProjects())
	fast := newInbox(t, h, 0)
	require.NoError(t, fast.SubscribeToAllProjects())

	const n = 50
	received := make(chan int)
	go func() {
		count := 0
		for range fast.Events() {
			count++
			if count == n {
				break
			}
		}
		received <- count
	}()
	for i := 1; i <= n; i++ {
		dispatch(t, h, fmt.Sprintf("p%d:1", i)) // distinct projects: nothing to coalesce
	}
	select {
	case count := <-received:
		assert.Equal(t, n, count, "the fast inbox gets everything")
	case <-time.After(liveness):
		t.Fatal("the fast inbox was held up")
	}
	waitClosed(t, slow)
	assert.ErrorIs(t, slow.Err(), fanout.ErrSlowSubscriber)
	assert.NoError(t, fast.Err())
}

func TestSlowInboxCoalescesToLatest(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	in := newInbox(t, h, 8)
	require.NoError(t, in.SubscribeToProject("a"))
	for v := 1; v <= 500; v++ {
		dispatch(t, h, fmt.Sprintf("a%d", v))
	}
	// Reading now: what was queued is coalesced, and it ends with the latest.
	last := ""
	for last != "a500" {
		last = receive(t, in)
	}
	assert.NoError(t, in.Err())
}

// When the hub closes (a Bus closing after flushing its outbox), an inbox
// first hands over what was queued for it, then closes Events: a reader
// that drains the channel misses nothing broadcast before the close.
func TestHubCloseHandsOverQueuedEvents(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToAllProjects())
	dispatch(t, h, "a1 b1 a2 b2 a3")
	h.Close()
	var got []string
	for ev := range in.Events() {
		got = append(got, nameOf(ev))
	}
	assert.Equal(t, []string{"a1", "b1", "a2", "b2", "a3"}, got)
	assert.ErrorIs(t, in.Err(), fanout.ErrClosed)
}

// Unsubscribing keeps its promise during the hand-over after the hub
// closed: no event that matched only the removed topic arrives.
func TestUnsubscribeDuringHandOver(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	in := newInbox(t, h, 0)
	require.NoError(t, in.SubscribeToProject("a"))
	require.NoError(t, in.SubscribeToProject("b"))
	dispatch(t, h, "a1 a2 b1")
	h.Close()
	in.UnsubscribeFromProject("a")
	var got []string
	for ev := range in.Events() {
		got = append(got, nameOf(ev))
	}
	assert.Equal(t, []string{"b1"}, got)
}
