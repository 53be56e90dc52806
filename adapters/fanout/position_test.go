package fanout_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// textCursor is a readable CursorCodec for tests: "0:12,1:7".
type textCursor struct{}

func (textCursor) Encode(vec []fanout.Position) string {
	parts := make([]string, len(vec))
	for i, p := range vec {
		parts[i] = fmt.Sprintf("%d:%d", p.Partition, p.Offset)
	}
	return strings.Join(parts, ",")
}

func (textCursor) Decode(id string) ([]fanout.Position, bool) {
	var vec []fanout.Position
	for _, part := range strings.Split(id, ",") {
		p, o, ok := strings.Cut(part, ":")
		if !ok {
			return nil, false
		}
		pn, err1 := strconv.ParseInt(p, 10, 32)
		on, err2 := strconv.ParseInt(o, 10, 64)
		if err1 != nil || err2 != nil || (len(vec) > 0 && int32(pn) <= vec[len(vec)-1].Partition) {
			return nil, false
		}
		vec = append(vec, fanout.Position{Partition: int32(pn), Offset: on})
	}
	return vec, true
}

// dispatchAt dispatches "a1@0/3 b1@1/0": version 1 of project a read at
// partition 0, offset 3, then b1 at partition 1, offset 0.
func dispatchAt(t testing.TB, h *fanout.Hub, spec string) []*fanout.Entry {
	t.Helper()
	var out []*fanout.Entry
	for _, f := range strings.Fields(spec) {
		name, at, ok := strings.Cut(f, "@")
		require.True(t, ok, f)
		p, o, ok := strings.Cut(at, "/")
		require.True(t, ok, f)
		pn, err := strconv.Atoi(p)
		require.NoError(t, err)
		on, err := strconv.Atoi(o)
		require.NoError(t, err)
		id, v := splitSpec(t, name)
		ev := event(t, id, v)
		data, err := codec.Encode(ev)
		require.NoError(t, err)
		e := h.DispatchAt(ev, data, fanout.Position{Partition: int32(pn), Offset: int64(on)})
		require.NotNil(t, e)
		out = append(out, e)
	}
	return out
}

// The log both hubs read: partition 0 holds a1..a4 (offsets 0..3),
// partition 1 b1 c1 b2 c2 (offsets 0..3). Each hub interleaves the two
// partitions its own way, as two gateways do.
const (
	logOnA = "a1@0/0 b1@1/0 a2@0/1 c1@1/1 a3@0/2 b2@1/2 a4@0/3 c2@1/3"
	logOnB = "b1@1/0 c1@1/1 a1@0/0 b2@1/2 a2@0/1 a3@0/2 c2@1/3 a4@0/3"
)

// An id of one hub resumes exactly on another hub that read the same log:
// the events past the id's position, in the second hub's order (which
// keeps each partition's, hence each project's), nothing seen twice, no
// snapshot.
func TestResumeFromAPositionOnAnotherHub(t *testing.T) {
	a := fanout.NewHub(fanout.Config{Cursor: textCursor{}})
	defer a.Close()
	b := fanout.NewHub(fanout.Config{Cursor: textCursor{}})
	defer b.Close()
	onA := dispatchAt(t, a, logOnA)
	dispatchAt(t, b, logOnB)
	assert.Equal(t, "0:1,1:1", onA[3].ID, "the id is the hub's position after the event")

	tests := []struct {
		name   string
		topics []domain.Topic
		lastID string // the id of the last event the client read on a
		want   string
	}{
		{"every project", []domain.Topic{domain.AllProjects}, onA[3].ID, "b2 a3 c2 a4"},
		{"one project", []domain.Topic{pt("a")}, onA[2].ID, "a3 a4"},
		{"several projects", []domain.Topic{pt("a"), pt("c")}, onA[3].ID, "a3 c2 a4"},
		{"up to date", []domain.Topic{domain.AllProjects}, onA[7].ID, ""},
		{"a partition the id does not name: from its first record", []domain.Topic{domain.AllProjects}, "0:1", "b1 c1 b2 a3 c2 a4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscribe(t, b, fanout.SubscribeOptions{Topics: tt.topics, Snapshot: true, LastEventID: tt.lastID})
			require.True(t, s.Resumed())
			assert.Equal(t, tt.want, take(s))
		})
	}
}

// What a hub cannot replay exactly gets the snapshot, never an error.
func TestResumeFromAPositionFallsBackToSnapshot(t *testing.T) {
	b := fanout.NewHub(fanout.Config{Cursor: textCursor{}})
	defer b.Close()
	dispatchAt(t, b, logOnB)
	small := fanout.NewHub(fanout.Config{Cursor: textCursor{}, History: 3})
	defer small.Close()
	dispatchAt(t, small, logOnB) // keeps a3 c2 a4: b2@1/2 and a2@0/1 are gone
	late := fanout.NewHub(fanout.Config{Cursor: textCursor{}})
	defer late.Close()
	dispatchAt(t, late, "a1@0/0 b2@1/2 a2@0/1") // started reading partition 1 at offset 2

	tests := []struct {
		name   string
		hub    *fanout.Hub
		lastID string
	}{
		{"garbage", b, "garbage"},
		{"another hub's in-memory id", b, "abcdefgh-3"},
		{"unknown partition", b, "0:1,1:1,7:0"},
		{"offset beyond what was read", b, "0:9,1:1"},
		{"older than the history", small, "0:1,1:1"},
		{"older than the history, one partition", small, "0:2,1:1"},
		{"a partition not named, whose start is gone", small, "0:2"},
		{"before the hub began reading the partition", late, "0:0,1:0"},
		{"a partition not named, read from the middle", late, "0:0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := subscribe(t, tt.hub, fanout.SubscribeOptions{
				Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: tt.lastID,
			})
			assert.False(t, s.Resumed())
			assert.NotEmpty(t, take(s), "the snapshot instead")
		})
	}
	// Where the hub began reading a partition, exactly: resumable.
	s := subscribe(t, late, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, LastEventID: "0:0,1:1"})
	require.True(t, s.Resumed())
	assert.Equal(t, "b2 a2", take(s))
	// The history's last events: resumable on the small hub.
	s = subscribe(t, small, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, LastEventID: "0:2,1:2"})
	require.True(t, s.Resumed())
	assert.Equal(t, "c2 a4", take(s))
}

// When a partition's offsets go backwards (the topic was recreated), its
// older events in the history are never replayed after an id of the new
// log, and an id beyond the new log's end gets the snapshot.
func TestResumeAfterAPartitionWentBackwards(t *testing.T) {
	h := fanout.NewHub(fanout.Config{Cursor: textCursor{}})
	defer h.Close()
	old := dispatchAt(t, h, "a1@0/0 a2@0/1 a3@0/2")
	fresh := dispatchAt(t, h, "a4@0/0 a5@0/1")
	assert.Equal(t, "0:0", fresh[0].ID)

	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: fresh[0].ID})
	require.True(t, s.Resumed())
	assert.Equal(t, "a5", take(s), "not a2, a3 of the log that is gone")

	s = subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, Snapshot: true, LastEventID: old[2].ID})
	assert.False(t, s.Resumed(), "0:2 is beyond the new log's end")
	assert.Equal(t, "a5", take(s))
}

// Without positions (in memory), ids stay "<epoch>-<seq>" even with a
// cursor codec, and resume as before.
func TestDispatchWithoutPositionKeepsHubIDs(t *testing.T) {
	h := fanout.NewHub(fanout.Config{Cursor: textCursor{}})
	defer h.Close()
	entries := dispatch(t, h, "a1 a2")
	assert.Regexp(t, `^[a-z2-7]+-1$`, entries[0].ID)
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, LastEventID: entries[0].ID})
	require.True(t, s.Resumed())
	assert.Equal(t, "a2", take(s))
}

// A replay that falls behind the history while it is read goes on with
// the latest event of each project, still skipping what the client had:
// no duplicate, no gap in state.
func TestResumeFromAPositionOutrunByTheHistory(t *testing.T) {
	h := fanout.NewHub(fanout.Config{Cursor: textCursor{}, History: 4})
	defer h.Close()
	dispatchAt(t, h, "a1@0/0 b1@1/0 a2@0/1 b2@1/1")
	// The client saw a1 and b2 (on another hub, in another order).
	s := subscribe(t, h, fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, LastEventID: "0:0,1:1", BacklogBytes: 1})
	require.True(t, s.Resumed())
	assert.Equal(t, "a2", names(s.Take(nil)), "one entry per Take")
	dispatchAt(t, h, "a3@0/2 a4@0/3 a5@0/4 a6@0/5") // the history no longer holds what follows a2
	assert.Equal(t, "a6", take(s), "b2, which the client had, is not sent again")
}
