// Package pubsubtest is the contract test suite of the subscription
// semantics: written once, run against every adapter (in memory, Kafka), the
// way Watermill's pubsub/tests runs against every Pub/Sub. Differences
// between adapters are declared in Features, not skipped ad hoc.
//
// Every scenario runs in parallel on a Bus of its own, and uses project ids
// of its own, so scenarios may share a broker.
package pubsubtest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// Bus is what the suite tests: the broadcaster and the subscription side.
type Bus interface {
	domain.StatusBroadcaster
	ports.Subscriptions
}

// Features declares what an adapter can do and how fast.
type Features struct {
	// Name of the adapter, for messages.
	Name string
	// ManyEvents is how many rapid broadcasts the order scenarios send.
	ManyEvents int
	// SlowSubscriberEvents is how many events the slow-subscriber scenario
	// broadcasts: more than an inbox queue holds, so that the stalled inbox
	// must coalesce or end. Default 3 × 16,384.
	SlowSubscriberEvents int
	// Timeout bounds how long a scenario waits for an expected event.
	Timeout time.Duration
}

// Constructor returns a running Bus and registers its Close with
// t.Cleanup. The suite calls it once per scenario.
type Constructor func(t *testing.T) Bus

var runID atomic.Int64

// TestBus runs every scenario against the Bus that newBus returns.
func TestBus(t *testing.T, f Features, newBus Constructor) {
	if f.ManyEvents <= 0 {
		f.ManyEvents = 10_000
	}
	if f.SlowSubscriberEvents <= 0 {
		f.SlowSubscriberEvents = 3 * 16_384
	}
	if f.Timeout <= 0 {
		f.Timeout = 10 * time.Second
	}
	scenarios := []struct {
		name string
		run  func(*testing.T, Features, Bus, string)
	}{
		{"ProjectTopicOnlyGetsItsProject", testProjectFilter},
		{"AllProjectsGetsEveryProject", testWildcard},
		{"OverlappingTopicsDeliverOnce", testOnce},
		{"ErrorEventCarriesReason", testErrorEvent},
		{"InvalidInputIsRejected", testInvalidInput},
		{"OrderPerProjectUnderRapidBroadcasts", testOrder},
		{"ConcurrentBroadcastersKeepOrderPerProject", testConcurrentBroadcasters},
		{"UnsubscribeFromProjectStopsDelivery", testUnsubscribeProject},
		{"UnsubscribeFromAllProjectsStopsDelivery", testUnsubscribeAll},
		{"CloseEndsTheInbox", testClose},
		{"SlowSubscriberDoesNotStallOthers", testSlowSubscriber},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			prefix := fmt.Sprintf("%s-%d-%d", strings.ToLower(f.Name), time.Now().UnixNano()%1e6, runID.Add(1))
			sc.run(t, f, newBus(t), prefix)
		})
	}
}

// Project returns event n of project id, as the suite broadcasts it: its
// Name, "app-n", carries n (Seq reads it back) and its UpdatedAt grows
// with n.
func Project(id string, n int) domain.Project {
	ts := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	return domain.Project{
		ID: id, Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
		CodeRepo: "https://github.com/user/" + id, DocsRepo: "https://github.com/user/" + id + "_docs",
		InsertedAt: ts, UpdatedAt: ts.Add(time.Duration(n) * time.Millisecond),
	}
}

// Seq returns the n of an event of a record made by Project, or -1.
func Seq(ev domain.Event) int {
	var n int
	if _, err := fmt.Sscanf(ev.Project.Name, "app-%d", &n); err != nil {
		return -1
	}
	return n
}

func newInbox(t *testing.T, bus Bus) ports.Inbox {
	t.Helper()
	in, err := bus.NewInbox()
	require.NoError(t, err)
	t.Cleanup(func() { _ = in.Close() })
	return in
}

// receive returns the next event of in whose project id starts with prefix
// (wildcard inboxes also see other scenarios' events).
func receive(t *testing.T, f Features, in ports.Inbox, prefix string) domain.Event {
	t.Helper()
	timeout := time.After(f.Timeout)
	for {
		select {
		case ev, ok := <-in.Events():
			require.True(t, ok, "inbox closed: %v", in.Err())
			if strings.HasPrefix(ev.Project.ID, prefix) {
				return ev
			}
		case <-timeout:
			require.FailNow(t, "no event", "waited %s for an event of %s*", f.Timeout, prefix)
		}
	}
}

// receiveUntil collects events of prefix until the event numbered n of
// project stop arrives, and returns those before it.
//
// Only the order of one project's events is guaranteed (Kafka orders per
// partition), so scenarios end a sequence with a fence: an event of a
// project whose earlier events were already seen, broadcast after a witness
// inbox saw every event the scenario checks for. Anything wrongly queued for
// in was dispatched before the fence, so it arrives before it.
func receiveUntil(t *testing.T, f Features, in ports.Inbox, prefix, stop string, n int) []domain.Event {
	t.Helper()
	var got []domain.Event
	for {
		ev := receive(t, f, in, prefix)
		if ev.Project.ID == stop && sequence(t, ev) == n {
			return got
		}
		got = append(got, ev)
	}
}

// witness returns an inbox of every project, to learn when events have
// been dispatched.
func witness(t *testing.T, bus Bus) ports.Inbox {
	t.Helper()
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToAllProjects())
	return in
}

// awaitDispatched reads w until it has seen the event numbered n of each
// of ids, in any order.
func awaitDispatched(t *testing.T, f Features, w ports.Inbox, prefix string, n map[string]int) {
	t.Helper()
	for len(n) > 0 {
		ev := receive(t, f, w, prefix)
		if want, ok := n[ev.Project.ID]; ok && sequence(t, ev) == want {
			delete(n, ev.Project.ID)
		}
	}
}

func broadcast(t *testing.T, bus Bus, p domain.Project) {
	t.Helper()
	require.NoError(t, bus.BroadcastProjectUpdate(p))
}

func testProjectFilter(t *testing.T, f Features, bus Bus, prefix string) {
	a, b := prefix+"-a", prefix+"-b"
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToProject(a))
	w := witness(t, bus)

	broadcast(t, bus, Project(b, 1))
	broadcast(t, bus, Project(a, 2))
	broadcast(t, bus, Project(b, 3))
	awaitDispatched(t, f, w, prefix, map[string]int{a: 2, b: 3})
	broadcast(t, bus, Project(a, 4)) // the fence

	got := receiveUntil(t, f, in, prefix, a, 4)
	require.Len(t, got, 1, "only project %s's event", a)
	assert.Equal(t, domain.EventProjectUpdated, got[0].Type)
	assert.Equal(t, Project(a, 2), got[0].Project, "the full record arrives")
}

func testWildcard(t *testing.T, f Features, bus Bus, prefix string) {
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToAllProjects())
	var want []string
	for i := range 20 {
		id := fmt.Sprintf("%s-%d", prefix, i)
		want = append(want, id)
		broadcast(t, bus, Project(id, i))
	}
	var got []string
	for range want {
		got = append(got, receive(t, f, in, prefix).Project.ID)
	}
	assert.ElementsMatch(t, want, got)
}

func testOnce(t *testing.T, f Features, bus Bus, prefix string) {
	a := prefix + "-a"
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToProject(a))
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, in.SubscribeToProject(a), "subscribing twice is harmless")

	for i := range 3 {
		broadcast(t, bus, Project(a, i))
	}
	broadcast(t, bus, Project(a, 9)) // the fence: a duplicate would come before it
	got := receiveUntil(t, f, in, prefix, a, 9)
	require.Len(t, got, 3, "each event once, though it matches two topics")
	for i, ev := range got {
		assert.Equal(t, Project(a, i), ev.Project)
	}
}

func testErrorEvent(t *testing.T, f Features, bus Bus, prefix string) {
	a := prefix + "-a"
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToProject(a))
	p := Project(a, 1)
	p.Status = domain.StatusFailed
	require.NoError(t, bus.BroadcastProjectError(p, "Mix deps.get failed"))
	ev := receive(t, f, in, prefix)
	assert.Equal(t, domain.Event{Type: domain.EventProjectError, Project: p, Error: "Mix deps.get failed"}, ev)
}

func testInvalidInput(t *testing.T, f Features, bus Bus, prefix string) {
	in := newInbox(t, bus)
	assert.Error(t, in.SubscribeToProject("projects:*"), "an id cannot forge the wildcard")
	assert.Error(t, in.SubscribeToProject(""), "empty id")
	assert.ErrorIs(t, bus.BroadcastProjectUpdate(Project("bad:id", 1)), domain.ErrInvalidEvent)
	assert.ErrorIs(t, bus.BroadcastProjectError(Project(prefix+"-a", 1), ""), domain.ErrInvalidEvent)
}

func testOrder(t *testing.T, f Features, bus Bus, prefix string) {
	ids := []string{prefix + "-a", prefix + "-b", prefix + "-c"}
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToAllProjects())
	single := newInbox(t, bus)
	require.NoError(t, single.SubscribeToProject(ids[0]))

	// Both inboxes are read while the broadcasts go on, as subscribers are.
	singleSeq := make(chan []int, 1)
	go func() {
		var got []int
		defer func() { singleSeq <- got }()
		for len(got) < (f.ManyEvents+len(ids)-1)/len(ids) {
			select {
			case ev, ok := <-single.Events():
				if !ok {
					return
				}
				got = append(got, Seq(ev))
			case <-time.After(f.Timeout):
				return
			}
		}
	}()
	go func() {
		for i := range f.ManyEvents {
			_ = bus.BroadcastProjectUpdate(Project(ids[i%len(ids)], i))
		}
	}()
	next := map[string]int{}
	for range f.ManyEvents {
		ev := receive(t, f, in, prefix)
		n := sequence(t, ev)
		id := ev.Project.ID
		if _, ok := next[id]; !ok {
			next[id] = slices.Index(ids, id)
		}
		require.Equal(t, next[id], n, "project %s: want event %d next (lower: reordered; higher: events lost)", id, next[id])
		next[id] += len(ids)
	}
	got := <-singleSeq
	require.Len(t, got, (f.ManyEvents+len(ids)-1)/len(ids), "the per-project inbox gets every event of its project")
	for i, n := range got {
		require.Equal(t, i*len(ids), n, "per-project inbox out of order")
	}
}

// sequence recovers n from a record built by Project(id, n).
func sequence(t *testing.T, ev domain.Event) int {
	t.Helper()
	n := Seq(ev)
	require.NotEqual(t, -1, n, "not a record made by Project: %q", ev.Project.Name)
	return n
}

func testConcurrentBroadcasters(t *testing.T, f Features, bus Bus, prefix string) {
	const broadcasters = 8
	per := max(f.ManyEvents/broadcasters, 10)
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToAllProjects())
	var wg sync.WaitGroup
	for g := range broadcasters {
		wg.Go(func() {
			id := fmt.Sprintf("%s-%d", prefix, g)
			for i := range per {
				assert.NoError(t, bus.BroadcastProjectUpdate(Project(id, i)))
			}
		})
	}
	next := map[string]int{}
	for range broadcasters * per {
		ev := receive(t, f, in, prefix)
		require.Equal(t, next[ev.Project.ID], sequence(t, ev), "project %s: want the next event in order, none lost", ev.Project.ID)
		next[ev.Project.ID]++
	}
	wg.Wait()
	assert.Len(t, next, broadcasters)
}

func testUnsubscribeProject(t *testing.T, f Features, bus Bus, prefix string) {
	a, b := prefix+"-a", prefix+"-b"
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToProject(a))
	require.NoError(t, in.SubscribeToProject(b))
	w := witness(t, bus)
	broadcast(t, bus, Project(a, 1))
	require.Equal(t, a, receive(t, f, in, prefix).Project.ID)

	in.UnsubscribeFromProject(a)
	in.UnsubscribeFromProject(prefix + "-never-subscribed") // harmless
	broadcast(t, bus, Project(a, 2))
	awaitDispatched(t, f, w, prefix, map[string]int{a: 2})
	broadcast(t, bus, Project(b, 3))
	ev := receive(t, f, in, prefix)
	assert.Equal(t, b, ev.Project.ID, "no event of %s after unsubscribing", a)
}

func testUnsubscribeAll(t *testing.T, f Features, bus Bus, prefix string) {
	a, b := prefix+"-a", prefix+"-b"
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, in.SubscribeToProject(b))
	w := witness(t, bus)
	broadcast(t, bus, Project(a, 1))
	require.Equal(t, a, receive(t, f, in, prefix).Project.ID)

	in.UnsubscribeFromAllProjects()
	broadcast(t, bus, Project(a, 2))
	awaitDispatched(t, f, w, prefix, map[string]int{a: 2})
	broadcast(t, bus, Project(b, 3))
	assert.Equal(t, b, receive(t, f, in, prefix).Project.ID, "only the project topic is left")
}

func testClose(t *testing.T, f Features, bus Bus, prefix string) {
	in := newInbox(t, bus)
	require.NoError(t, in.SubscribeToAllProjects())
	require.NoError(t, in.Close())
	require.NoError(t, in.Close(), "Close is idempotent")
	broadcast(t, bus, Project(prefix+"-a", 1))
	select {
	case _, ok := <-in.Events():
		assert.False(t, ok, "a closed inbox delivers nothing")
	case <-time.After(f.Timeout):
		require.FailNow(t, "Events not closed after Close")
	}
	assert.Error(t, in.Err())
	assert.Error(t, in.SubscribeToProject(prefix+"-a"), "a closed inbox takes no topics")
}

func testSlowSubscriber(t *testing.T, f Features, bus Bus, prefix string) {
	stalled := newInbox(t, bus) // never read
	require.NoError(t, stalled.SubscribeToAllProjects())
	reader := newInbox(t, bus)
	require.NoError(t, reader.SubscribeToAllProjects())

	// Broadcast in chunks the reader must receive before the next one: if
	// the stalled inbox held up delivery, the reader would time out.
	ids := []string{prefix + "-a", prefix + "-b"}
	const chunk = 1000
	want := map[string]int{ids[0]: 0, ids[1]: 1} // next sequence number per project
	for start := 0; start < f.SlowSubscriberEvents; start += chunk {
		for i := start; i < start+chunk; i++ {
			broadcast(t, bus, Project(ids[i%2], i))
		}
		for range chunk {
			ev := receive(t, f, reader, prefix)
			require.Equal(t, want[ev.Project.ID], sequence(t, ev), "the reader gets every event, in order, despite a stalled inbox")
			want[ev.Project.ID] += 2
		}
	}
	// Whatever the stalled inbox kept (coalesced, or ended as too slow),
	// it never reorders a project's events.
	last := map[string]int{}
	for {
		select {
		case ev, ok := <-stalled.Events():
			if !ok {
				return
			}
			if !strings.HasPrefix(ev.Project.ID, prefix) {
				continue
			}
			n := sequence(t, ev)
			if prev, seen := last[ev.Project.ID]; seen {
				require.Greater(t, n, prev, "stalled inbox reordered project %s", ev.Project.ID)
			}
			last[ev.Project.ID] = n
		case <-time.After(200 * time.Millisecond):
			return
		}
	}
}
