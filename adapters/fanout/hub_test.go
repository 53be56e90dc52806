package fanout_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var base = time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)

// event returns version v of project id: a project_updated whose Name is
// "<id>/<v>", so tests can tell versions apart.
func event(t testing.TB, id string, v int) domain.Event {
	t.Helper()
	ev, err := domain.NewProjectUpdated(domain.Project{
		ID: id, Name: fmt.Sprintf("%s/%d", id, v), Status: domain.StatusCompiling,
		InsertedAt: base, UpdatedAt: base.Add(time.Duration(v) * time.Second),
	})
	require.NoError(t, err)
	return ev
}

func errorEvent(t testing.TB, id string, v int, reason string) domain.Event {
	t.Helper()
	ev, err := domain.NewProjectError(domain.Project{
		ID: id, Name: fmt.Sprintf("%s/%d", id, v), Status: domain.StatusFailed,
		InsertedAt: base, UpdatedAt: base.Add(time.Duration(v) * time.Second),
	}, reason)
	require.NoError(t, err)
	return ev
}

// dispatch dispatches version v of each project in "a1 b1 a2" order and
// returns the entries.
func dispatch(t testing.TB, h *fanout.Hub, spec string) []*fanout.Entry {
	t.Helper()
	var out []*fanout.Entry
	for _, f := range strings.Fields(spec) {
		id, v := splitSpec(t, f)
		ev := event(t, id, v)
		data, err := codec.Encode(ev)
		require.NoError(t, err)
		e := h.Dispatch(ev, data)
		require.NotNil(t, e)
		out = append(out, e)
	}
	return out
}

// splitSpec splits "a12" into "a", 12 and "proj-7:3" into "proj-7", 3.
func splitSpec(t testing.TB, s string) (string, int) {
	t.Helper()
	if id, v, ok := strings.Cut(s, ":"); ok {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		return id, n
	}
	i := strings.IndexFunc(s, func(r rune) bool { return r >= '0' && r <= '9' })
	require.Positive(t, i, "bad spec %q", s)
	n, err := strconv.Atoi(s[i:])
	require.NoError(t, err)
	return s[:i], n
}

// names turns entries into "a1 b1 a2" form (the Name of each project).
func names(entries []*fanout.Entry) string {
	parts := make([]string, len(entries))
	for i, e := range entries {
		parts[i] = strings.Replace(e.Event().Project.Name, "/", "", 1)
	}
	return strings.Join(parts, " ")
}

func subscribe(t testing.TB, h *fanout.Hub, opts fanout.SubscribeOptions) *fanout.Subscription {
	t.Helper()
	s, err := h.Subscribe(opts)
	require.NoError(t, err)
	t.Cleanup(s.Close)
	return s
}

func topics(ts ...domain.Topic) fanout.SubscribeOptions {
	return fanout.SubscribeOptions{Topics: ts}
}

func pt(id string) domain.Topic { return domain.ProjectTopic(id) }

// take takes everything the subscription has for now: its backlog, which
// comes a chunk at a time, and its queue.
func take(s *fanout.Subscription) string { return names(takeAll(s)) }

func takeAll(s *fanout.Subscription) []*fanout.Entry {
	var got []*fanout.Entry
	for {
		got = s.Take(got)
		if !s.InBacklog() {
			return s.Take(got)
		}
	}
}

func isDone(s *fanout.Subscription) bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func TestDispatchNumbersEntries(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()

	ev := errorEvent(t, "a", 1, "Mix deps.get failed")
	data, err := codec.Encode(ev)
	require.NoError(t, err)
	first := h.Dispatch(ev, data)
	rest := dispatch(t, h, "b1 a2")

	entries := append([]*fanout.Entry{first}, rest...)
	ids := map[string]bool{}
	for i, e := range entries {
		assert.Equal(t, uint64(i+1), e.Seq)
		assert.NotEmpty(t, e.ID)
		assert.False(t, ids[e.ID], "id %q repeated", e.ID)
		ids[e.ID] = true
	}
	assert.Equal(t, ev, first.Event())
	assert.Equal(t, data, first.Data)
	assert.Equal(t, "a", first.ProjectID())
	assert.Equal(t, "b", rest[0].ProjectID())
}

func TestEntryIDsDifferBetweenHubs(t *testing.T) {
	// A restarted process must not mistake an old id for one of its own.
	h1, h2 := fanout.NewHub(fanout.Config{}), fanout.NewHub(fanout.Config{})
	defer h1.Close()
	defer h2.Close()
	e1, e2 := dispatch(t, h1, "a1")[0], dispatch(t, h2, "a1")[0]
	assert.Equal(t, e1.Seq, e2.Seq)
	assert.NotEqual(t, e1.ID, e2.ID)
}

func TestDispatchGoesToSelectingSubscriptionsOnce(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	onlyA := subscribe(t, h, topics(pt("a")))
	onlyB := subscribe(t, h, topics(pt("b")))
	aAndB := subscribe(t, h, topics(pt("a"), pt("b")))
	all := subscribe(t, h, topics(domain.AllProjects))
	aAndAll := subscribe(t, h, topics(pt("a"), domain.AllProjects))
	allAndA := subscribe(t, h, topics(domain.AllProjects, pt("a"), pt("b")))
	none := subscribe(t, h, topics())
	prefixOfA := subscribe(t, h, topics(pt("aa")))

	dispatch(t, h, "a1 b1 c1 a2")

	assert.Equal(t, "a1 a2", take(onlyA))
	assert.Equal(t, "b1", take(onlyB))
	assert.Equal(t, "a1 b1 a2", take(aAndB))
	assert.Equal(t, "a1 b1 c1 a2", take(all))
	assert.Equal(t, "a1 b1 c1 a2", take(aAndAll), "once, even when both topics select it")
	assert.Equal(t, "a1 b1 c1 a2", take(allAndA))
	assert.Empty(t, take(none))
	assert.Empty(t, take(prefixOfA))
}

func TestLatest(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	_, ok := h.Latest("a")
	assert.False(t, ok)
	assert.Empty(t, h.LatestAll())

	entries := dispatch(t, h, "a1 b1 a2 c1")
	got, ok := h.Latest("a")
	require.True(t, ok)
	assert.Same(t, entries[2], got)
	_, ok = h.Latest("d")
	assert.False(t, ok)

	assert.Equal(t, "b1 a2 c1", names(h.LatestAll()), "least recently updated first")
}

func TestLatestErrorEventIsKept(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	dispatch(t, h, "a1")
	ev := errorEvent(t, "a", 2, "boom")
	h.Dispatch(ev, nil)
	got, ok := h.Latest("a")
	require.True(t, ok)
	assert.Equal(t, ev, got.Event())
}

func TestMaxProjectsForgetsLeastRecentlyUpdated(t *testing.T) {
	h := fanout.NewHub(fanout.Config{MaxProjects: 2})
	defer h.Close()
	dispatch(t, h, "a1 b1 c1")
	_, ok := h.Latest("a")
	assert.False(t, ok, "a was updated longest ago")
	assert.Equal(t, "b1 c1", names(h.LatestAll()))

	dispatch(t, h, "b2 d1") // b is now more recent than c
	_, ok = h.Latest("c")
	assert.False(t, ok)
	assert.Equal(t, "b2 d1", names(h.LatestAll()))

	// A forgotten project is not in a snapshot either.
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a"), pt("b"), pt("c"), pt("d")}, Snapshot: true})
	assert.Equal(t, "b2 d1", take(s))
}

func TestSnapshot(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	dispatch(t, h, "a1")
	h.Dispatch(errorEvent(t, "b", 1, "Mix deps.get failed"), nil)
	dispatch(t, h, "a2 c1 d1")

	tests := []struct {
		name   string
		topics []domain.Topic
		want   string
	}{
		{"one project", []domain.Topic{pt("a")}, "a2"},
		{"several, in seq order", []domain.Topic{pt("d"), pt("a"), pt("b")}, "b1 a2 d1"},
		{"unknown project", []domain.Topic{pt("zzz")}, ""},
		{"known and unknown", []domain.Topic{pt("zzz"), pt("c")}, "c1"},
		{"wildcard", []domain.Topic{domain.AllProjects}, "b1 a2 c1 d1"},
		{"wildcard and project", []domain.Topic{pt("a"), domain.AllProjects}, "b1 a2 c1 d1"},
		{"no topics", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscribe(t, h, fanout.SubscribeOptions{Topics: tt.topics, Snapshot: true})
			got := takeAll(s)
			assert.Equal(t, tt.want, names(got))
			assert.False(t, s.Resumed())
			for _, e := range got {
				if e.ProjectID() == "b" {
					assert.Equal(t, domain.EventProjectError, e.Type(), "the snapshot keeps the error event")
					assert.Equal(t, "Mix deps.get failed", e.Event().Error)
				}
			}
		})
	}
}

func TestSnapshotThenLive(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	dispatch(t, h, "a1 b1")
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a")}, Snapshot: true})
	select {
	case <-s.Ready():
	default:
		t.Fatal("a queued snapshot makes the subscription ready")
	}
	dispatch(t, h, "b2 a2")
	assert.Equal(t, "a2", take(s), "the snapshot is read when taken: a2 replaced a1 meanwhile, and comes once")

	s = subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a")}, Snapshot: true})
	assert.Equal(t, "a2", take(s))
	dispatch(t, h, "b3 a3")
	assert.Equal(t, "a3", take(s), "then live")
}

// A snapshot is read from the cache a chunk at a time, as the subscriber
// takes it, in seq order, whatever happens to the cache meanwhile: each
// project comes once, with its latest event as of when the walk reaches it,
// and nothing between the snapshot and live events is missed or repeated.
func TestSnapshotIsWalkedLazilyByChunks(t *testing.T) {
	h := fanout.NewHub(fanout.Config{MaxProjects: 1000})
	defer h.Close()
	var spec []string
	for i := range 100 {
		spec = append(spec, fmt.Sprintf("p%03d:1", i))
	}
	dispatch(t, h, strings.Join(spec, " "))
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, BacklogBytes: 1})
	var got []*fanout.Entry
	for i := 0; s.InBacklog(); i++ {
		chunk := s.Take(nil)
		require.LessOrEqual(t, len(chunk), 1, "one entry per chunk of 1 byte")
		got = append(got, chunk...)
		if i == 10 {
			// Meanwhile: p000 (already sent) and p050 (not yet) are
			// updated, p099 too, and a new project arrives.
			dispatch(t, h, "p000:2 p050:2 p099:2 new:1")
		}
	}
	dispatch(t, h, "p001:3")
	got = append(got, s.Take(nil)...)
	seen := map[string]int{}
	var last uint64
	for _, e := range got {
		require.Greater(t, e.Seq, last, "in seq order")
		last = e.Seq
		seen[e.ProjectID()]++
	}
	assert.Equal(t, 2, seen["p000"], "sent in the snapshot, then its update")
	assert.Equal(t, 1, seen["p050"], "its update, once (the walk had not reached it)")
	assert.Equal(t, 1, seen["new"])
	assert.Equal(t, 2, seen["p001"], "then live")
	assert.Len(t, seen, 101)
}

func TestWithoutSnapshotOnlyLive(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	dispatch(t, h, "a1")
	s := subscribe(t, h, topics(pt("a")))
	assert.Zero(t, s.Pending())
	dispatch(t, h, "a2")
	assert.Equal(t, "a2", take(s))
}

func TestResumeReplaysMissedEvents(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	entries := dispatch(t, h, "a1 b1 a2 c1 b2 a3")

	tests := []struct {
		name   string
		topics []domain.Topic
		after  int // index of the last entry seen
		want   string
	}{
		{"one project", []domain.Topic{pt("a")}, 0, "a2 a3"},
		{"two projects", []domain.Topic{pt("a"), pt("b")}, 1, "a2 b2 a3"},
		{"wildcard", []domain.Topic{domain.AllProjects}, 2, "c1 b2 a3"},
		{"wildcard and project, once", []domain.Topic{domain.AllProjects, pt("a")}, 2, "c1 b2 a3"},
		{"up to date", []domain.Topic{domain.AllProjects}, 5, ""},
		{"nothing matching missed", []domain.Topic{pt("c")}, 3, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscribe(t, h, fanout.SubscribeOptions{
				Topics: tt.topics, Snapshot: true, LastEventID: entries[tt.after].ID,
			})
			assert.True(t, s.Resumed())
			assert.Equal(t, tt.want, take(s), "exact replay, no snapshot")
		})
	}
}

func TestResumeThenLive(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	entries := dispatch(t, h, "a1 a2")
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a")}, LastEventID: entries[0].ID})
	dispatch(t, h, "a3")
	got := takeAll(s)
	assert.Equal(t, "a2 a3", names(got))
	assert.Equal(t, []uint64{2, 3}, []uint64{got[0].Seq, got[1].Seq})
}

func TestResumeFallsBackToSnapshot(t *testing.T) {
	h := fanout.NewHub(fanout.Config{History: 4})
	defer h.Close()
	entries := dispatch(t, h, "a1 b1 a2 b2 a3 b3 a4 b4 a5 b5") // seq 1..10; history keeps 7..10
	epoch, _, ok := strings.Cut(entries[0].ID, "-")
	require.True(t, ok, "ids look like <epoch>-<seq>: %q", entries[0].ID)

	other := fanout.NewHub(fanout.Config{})
	defer other.Close()
	foreign := dispatch(t, other, "a1")[0].ID

	tests := []struct {
		name   string
		lastID string
	}{
		{"unknown epoch", "zzzzzzzz-3"},
		{"another hub's id", foreign},
		{"malformed", "garbage"},
		{"malformed seq", epoch + "-x"},
		{"negative seq", epoch + "--1"},
		{"epoch only", epoch},
		{"seq only", "5"},
		{"in the future", epoch + "-11"},
		{"far in the future", epoch + "-18446744073709551615"},
		{"older than the history", epoch + "-5"},
		{"much older than the history", epoch + "-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscribe(t, h, fanout.SubscribeOptions{
				Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: tt.lastID,
			})
			assert.False(t, s.Resumed())
			assert.Equal(t, "a5 b5", take(s), "the snapshot instead")

			noSnapshot := subscribe(t, h, fanout.SubscribeOptions{
				Topics: []domain.Topic{domain.AllProjects}, LastEventID: tt.lastID,
			})
			assert.False(t, noSnapshot.Resumed())
			assert.Zero(t, noSnapshot.Pending(), "nothing without Snapshot")
		})
	}
}

func TestResumeAtHistoryBoundary(t *testing.T) {
	h := fanout.NewHub(fanout.Config{History: 4})
	defer h.Close()
	entries := dispatch(t, h, "a1 b1 a2 b2 a3 b3 a4 b4 a5 b5") // history keeps seq 7..10

	// Seen up to seq 6: every event after it is still kept.
	s := subscribe(t, h, fanout.SubscribeOptions{
		Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: entries[5].ID,
	})
	assert.True(t, s.Resumed())
	assert.Equal(t, "a4 b4 a5 b5", take(s))

	// Seen up to seq 5: seq 6 is gone.
	s = subscribe(t, h, fanout.SubscribeOptions{
		Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: entries[4].ID,
	})
	assert.False(t, s.Resumed())
	assert.Equal(t, "a5 b5", take(s))
}

func TestResumeBeforeHistoryWraps(t *testing.T) {
	h := fanout.NewHub(fanout.Config{History: 4})
	defer h.Close()
	entries := dispatch(t, h, "a1 b1 a2")
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a")}, LastEventID: entries[0].ID})
	assert.True(t, s.Resumed())
	assert.Equal(t, "a2", take(s))
}

// The backlog (snapshot or replay) is held beside the bounded queue, not
// in it: a dashboard of more projects than the queue bound, or a resume
// across more events than it, gets all of it. Only live events are bounded.
func TestBacklogLargerThanQueue(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	dispatch(t, h, "a1 b1 c1 d1 e1")

	s := subscribe(t, h, fanout.SubscribeOptions{
		Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, QueueSize: 3,
	})
	assert.True(t, s.InBacklog())
	select {
	case <-s.Ready():
	default:
		require.Fail(t, "a pending backlog makes Ready fire at once")
	}
	assert.Equal(t, "a1 b1 c1 d1 e1", take(s), "the whole snapshot, in order")
	assert.Equal(t, 0, s.Pending())

	// A replay is not coalesced either: every missed event, in order.
	h2 := fanout.NewHub(fanout.Config{})
	defer h2.Close()
	entries := dispatch(t, h2, "a1 a2 b1 a3 b2 a4 b3")
	s2 := subscribe(t, h2, fanout.SubscribeOptions{
		Topics: []domain.Topic{domain.AllProjects}, LastEventID: entries[0].ID, QueueSize: 4,
	})
	assert.True(t, s2.Resumed())
	assert.Equal(t, "a2 b1 a3 b2 a4 b3", take(s2))

	// Live events after the backlog are bounded by the queue as usual.
	dispatch(t, h2, "p1:1 p2:1 p3:1 p4:1 p5:1 p6:1")
	assert.True(t, isDone(s2), "live events of distinct projects beyond the bound end it")
	assert.ErrorIs(t, s2.Err(), fanout.ErrSlowSubscriber)
}

// Removing a topic drops the backlog entries that no longer match, like
// queued ones.
func TestRemoveFiltersTheBacklog(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	dispatch(t, h, "a1 b1 c1")
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a"), pt("b"), pt("c")}, Snapshot: true})
	s.Remove(pt("b"))
	assert.Equal(t, "a1 c1", take(s))
}

func TestSlowSubscriberIsEnded(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	slow := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, QueueSize: 4})
	fast := subscribe(t, h, topics(domain.AllProjects))
	other := subscribe(t, h, topics(pt("p5")))

	spec := make([]string, 0, 10)
	for i := 1; i <= 10; i++ {
		spec = append(spec, fmt.Sprintf("p%d:1", i))
	}
	dispatch(t, h, strings.Join(spec, " "))

	require.True(t, isDone(slow), "a subscriber whose queue holds only distinct projects is ended")
	assert.ErrorIs(t, slow.Err(), fanout.ErrSlowSubscriber)
	assert.Len(t, fast.Take(nil), 10, "the others still get everything")
	assert.Equal(t, "p51", take(other))
	assert.False(t, isDone(fast))
	assert.NoError(t, fast.Err())

	// An ended subscription gets nothing more and takes no topics.
	dispatch(t, h, "p1:2")
	assert.Equal(t, "p12", take(fast))
	assert.ErrorIs(t, slow.Add(pt("x")), fanout.ErrSlowSubscriber)
}

func TestSlowSubscriberCoalesces(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, QueueSize: 8})
	var spec []string
	for v := 1; v <= 100; v++ {
		spec = append(spec, fmt.Sprintf("a%d b%d c%d", v, v, v))
	}
	dispatch(t, h, strings.Join(spec, " "))

	require.False(t, isDone(s), "few projects always fit after coalescing")
	got := takeAll(s)
	require.LessOrEqual(t, len(got), 8)
	assert.Equal(t, "a100 b100 c100", names(got[len(got)-3:]), "the latest of each project survives")
	last := map[string]uint64{}
	for _, e := range got {
		assert.Greater(t, e.Seq, last[e.ProjectID()], "order per project")
		last[e.ProjectID()] = e.Seq
	}
}

func TestAddAndRemoveAtRunTime(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	s := subscribe(t, h, topics())
	dispatch(t, h, "a1")
	assert.Empty(t, take(s))

	require.NoError(t, s.Add(pt("a")))
	require.NoError(t, s.Add(pt("a")), "adding a selected topic does nothing")
	dispatch(t, h, "a2 b1")
	assert.Equal(t, "a2", take(s))
	assert.True(t, s.Selects("a"))
	assert.False(t, s.Selects("b"))

	require.NoError(t, s.Add(domain.AllProjects))
	dispatch(t, h, "a3 b2")
	assert.Equal(t, "a3 b2", take(s), "once each")
	assert.True(t, s.Selects("b"))

	s.Remove(domain.AllProjects)
	dispatch(t, h, "a4 b3")
	assert.Equal(t, "a4", take(s), "the project topic stays")

	s.Remove(pt("a"))
	s.Remove(pt("never-added"))
	dispatch(t, h, "a5 b4")
	assert.Empty(t, take(s))
	assert.False(t, s.Selects("a"))

	// Removed once, added again: selected again.
	require.NoError(t, s.Add(pt("a")))
	dispatch(t, h, "a6")
	assert.Equal(t, "a6", take(s))
}

func TestAddRejectsInvalidTopic(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	s := subscribe(t, h, topics())
	for _, bad := range []domain.Topic{"projects:", "projects:a:b", "projects:**", "project:a", ""} {
		assert.ErrorIs(t, s.Add(bad), domain.ErrInvalidTopic, bad)
	}
	_, err := h.Subscribe(topics(pt("ok"), "projects:a*"))
	assert.ErrorIs(t, err, domain.ErrInvalidTopic)
}

func TestRemovePurgesQueuedEntries(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()

	s := subscribe(t, h, topics(pt("a"), pt("b")))
	dispatch(t, h, "a1 b1 a2")
	s.Remove(pt("a"))
	assert.Equal(t, 1, s.Pending())
	assert.Equal(t, "b1", take(s))

	// With the wildcard still selected, nothing is purged.
	w := subscribe(t, h, topics(pt("a"), domain.AllProjects))
	dispatch(t, h, "a3 b2")
	w.Remove(pt("a"))
	assert.Equal(t, "a3 b2", take(w))

	// Removing the wildcard purges what only it selected.
	w2 := subscribe(t, h, topics(pt("a"), domain.AllProjects))
	dispatch(t, h, "a4 b3 c1")
	w2.Remove(domain.AllProjects)
	assert.Equal(t, "a4", take(w2))
}

func TestSubscriptionClose(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	s := subscribe(t, h, topics(domain.AllProjects))
	require.NoError(t, s.Err())
	assert.False(t, isDone(s))

	s.Close()
	s.Close() // idempotent
	assert.True(t, isDone(s))
	assert.ErrorIs(t, s.Err(), fanout.ErrClosed)
	dispatch(t, h, "a1")
	assert.Zero(t, s.Pending(), "a closed subscription gets nothing")
	assert.ErrorIs(t, s.Add(pt("a")), fanout.ErrClosed)
	s.Remove(domain.AllProjects) // harmless
}

// isReady reports whether Ready has a value, and takes it.
func isReady(s *fanout.Subscription) bool {
	select {
	case <-s.Ready():
		return true
	default:
		return false
	}
}

// A consumer may wait on Ready alone (an SSE stream does, to hold one
// channel wait per idle stream): the end of the subscription, for any
// reason (a slow one is ended by a push, which fills it anyway), and Wake
// fill it as queued entries do.
func TestReadyWakesOnEndAndOnWake(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	s := subscribe(t, h, topics(domain.AllProjects))
	assert.False(t, isReady(s), "an idle subscription is not ready")
	s.Wake()
	assert.True(t, isReady(s), "Wake fills Ready")
	assert.Empty(t, s.Take(nil), "a wake-up may find nothing to take")
	assert.False(t, isReady(s))

	s.Close()
	assert.True(t, isReady(s), "Close fills Ready")

	ended := subscribe(t, h, topics(pt("a")))
	h.Close()
	assert.True(t, isReady(ended), "the hub's Close fills Ready")
}

func TestHubCloseEndsEverySubscription(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	subs := []*fanout.Subscription{
		subscribe(t, h, topics(domain.AllProjects)),
		subscribe(t, h, topics(pt("a"))),
		subscribe(t, h, topics(pt("a"), pt("b"), domain.AllProjects)),
		subscribe(t, h, topics()), // selects nothing yet (an Inbox before its first Subscribe)
	}
	h.Close()
	h.Close() // idempotent
	for i, s := range subs {
		assert.True(t, isDone(s), "subscription %d not ended", i)
		assert.ErrorIs(t, s.Err(), fanout.ErrClosed, "subscription %d", i)
	}

	ev := event(t, "a", 1)
	assert.Nil(t, h.Dispatch(ev, nil), "Dispatch does nothing after Close")
	_, err := h.Subscribe(topics(pt("a")))
	assert.ErrorIs(t, err, fanout.ErrClosed)
	assert.ErrorIs(t, subs[3].Add(pt("a")), fanout.ErrClosed)
}

func TestSubscribeIsAtomicWithDispatch(t *testing.T) {
	// Subscriptions opened while events flow see, per project, a snapshot
	// (or nothing) followed by every later event: no gap, no repeat.
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	const events = 2_000
	var wg sync.WaitGroup
	wg.Go(func() {
		for v := 1; v <= events; v++ {
			dispatch(t, h, fmt.Sprintf("a%d", v))
		}
	})
	var subs []*fanout.Subscription
	for range 50 {
		subs = append(subs, subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{pt("a")}, Snapshot: true}))
	}
	wg.Wait()
	for _, s := range subs {
		got := takeAll(s)
		require.NotEmpty(t, got)
		for i := 1; i < len(got); i++ {
			require.Equal(t, got[i-1].Seq+1, got[i].Seq, "gap or repeat at the seam")
		}
		assert.Equal(t, uint64(events), got[len(got)-1].Seq)
	}
}

func TestConcurrentDispatchSubscribeClose(t *testing.T) {
	// A smoke test for -race: every operation at once.
	h := fanout.NewHub(fanout.Config{History: 64, MaxProjects: 8, QueueSize: 16})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for v := range 300 {
				ev := event(t, fmt.Sprintf("p%d", (w*7+v)%12), v+1)
				h.Dispatch(ev, nil)
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for i := range 100 {
				s, err := h.Subscribe(fanout.SubscribeOptions{
					Topics: []domain.Topic{pt(fmt.Sprintf("p%d", i%12))}, Snapshot: true,
				})
				if err != nil {
					continue
				}
				_ = s.Add(domain.AllProjects)
				s.Take(nil)
				s.Remove(domain.AllProjects)
				_ = s.Err()
				h.LatestAll()
				s.Close()
			}
		})
	}
	wg.Wait()
	h.Close()
	assert.LessOrEqual(t, len(h.LatestAll()), 8)
}

// countingMetrics records what the hub reports.
type countingMetrics struct {
	mu                                   sync.Mutex
	dispatched, delivered, dropped, subs int
	coalesced                            int
}

func (m *countingMetrics) EventDispatched() { m.mu.Lock(); m.dispatched++; m.mu.Unlock() }
func (m *countingMetrics) Delivered(n int)  { m.mu.Lock(); m.delivered += n; m.mu.Unlock() }
func (m *countingMetrics) Coalesced(n int)  { m.mu.Lock(); m.coalesced += n; m.mu.Unlock() }
func (m *countingMetrics) SubscriberDropped() {
	m.mu.Lock()
	m.dropped++
	m.mu.Unlock()
}
func (m *countingMetrics) SubscriptionsChanged(d int) { m.mu.Lock(); m.subs += d; m.mu.Unlock() }

func TestMetrics(t *testing.T) {
	m := &countingMetrics{}
	h := fanout.NewHub(fanout.Config{Metrics: m})
	a := subscribe(t, h, topics(pt("a"), domain.AllProjects))
	slow := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, QueueSize: 1})
	_ = subscribe(t, h, topics())
	assert.Equal(t, 3, m.subs)

	dispatch(t, h, "a1 b1") // slow is dropped at b1
	assert.Equal(t, 2, m.dispatched)
	assert.Equal(t, 3, m.delivered, "a: 2, slow: 1")
	assert.Equal(t, 1, m.dropped)
	assert.Equal(t, 2, m.subs, "the dropped subscriber no longer counts")

	slow.Close() // already ended: not counted twice
	a.Close()
	a.Close()
	assert.Equal(t, 1, m.subs)
	h.Close()
	assert.Equal(t, 0, m.subs, "every subscription is gone after Hub.Close")
}

// A subscription with ParkWhenFull whose queue is full is parked: out of the
// index, it costs nothing per event; when its consumer takes again it gets
// its queue, then the latest event of each project updated meanwhile, in
// order, then live events.
func TestFullQueueParksAndCatchesUp(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, QueueSize: 3, ParkWhenFull: true})
	dispatch(t, h, "a1 b1 c1")
	assert.Zero(t, s.Parked())
	dispatch(t, h, "a2 d1 a3 b2")
	assert.Equal(t, 1, s.Parked(), "the fourth event parked it")
	assert.False(t, isDone(s), "parked, not ended")
	assert.Equal(t, "a1 b1 c1", names(s.Take(nil)), "its queue first")
	assert.Equal(t, "d1 a3 b2", take(s), "then the latest of each project updated since, in order")
	dispatch(t, h, "c2")
	assert.Equal(t, "c2", take(s), "then live")
}

// SortedIDs lists the cached projects by id, shared until the set of
// projects changes; LatestOf looks a group of them up.
func TestSortedIDsAndLatestOf(t *testing.T) {
	h := fanout.NewHub(fanout.Config{MaxProjects: 3})
	defer h.Close()
	assert.Empty(t, h.SortedIDs())
	dispatch(t, h, "c1 a1 b1")
	ids := h.SortedIDs()
	assert.Equal(t, []string{"a", "b", "c"}, ids)
	dispatch(t, h, "a2")
	assert.Same(t, &ids[0], &h.SortedIDs()[0], "an update does not change the set: the same list")
	dispatch(t, h, "d1") // forgets c, the least recently updated
	assert.Equal(t, []string{"a", "b", "d"}, h.SortedIDs())
	assert.Equal(t, "a2 d1", names(h.LatestOf(nil, []string{"a", "c", "d"})), "c is forgotten")
}
