package fanout_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// An entry does not keep a window into a larger buffer of the caller's (it
// copies the envelope JSON then; the codec's output it keeps as it is),
// locates the project record in it, and decodes the event on demand.
func TestEntryKeepsOnlyItsJSON(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	for _, ev := range []domain.Event{event(t, "a", 1), errorEvent(t, "b", 1, "Mix <deps> \"failed\"")} {
		data, err := codec.Encode(ev)
		require.NoError(t, err)
		buf := append(append([]byte(nil), data...), make([]byte, 4096)...) // a larger read buffer
		e := h.Dispatch(ev, buf[:len(data)])
		assert.Equal(t, data, e.Data)
		assert.Less(t, cap(e.Data), len(buf), "Data does not pin the caller's buffer")
		assert.NotSame(t, &buf[0], &e.Data[0])
		project, err := json.Marshal(ev.Project)
		require.NoError(t, err)
		assert.Equal(t, string(project), string(e.ProjectJSON()))
		assert.Equal(t, ev, e.Event())
		assert.Equal(t, ev.Type, e.Type())

		other := h.Dispatch(ev, []byte(" { not canonical } "))
		assert.Equal(t, data, other.Data, "anything but the canonical JSON is re-encoded")
		assert.Equal(t, string(project), string(other.ProjectJSON()))
	}
}

// BenchmarkDispatch measures the work of one event: it must not grow with
// the subscribers of other projects (the index), and grows with the
// subscribers that selected the event's project.
func BenchmarkDispatch(b *testing.B) {
	for _, bc := range []struct{ others, matching int }{
		{0, 1}, {1_000, 1}, {10_000, 1}, {100_000, 1},
		{0, 10}, {0, 100}, {0, 1_000},
	} {
		b.Run(fmt.Sprintf("others=%d/matching=%d", bc.others, bc.matching), func(b *testing.B) {
			h := fanout.NewHub(fanout.Config{})
			defer h.Close()
			for i := range bc.others {
				s, err := h.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.ProjectTopic(fmt.Sprintf("other-%d", i))}})
				require.NoError(b, err)
				defer s.Close()
			}
			subs := make([]*fanout.Subscription, bc.matching)
			for i := range subs {
				topic := domain.ProjectTopic("hot")
				if i%2 == 1 {
					topic = domain.AllProjects
				}
				s, err := h.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{topic}, QueueSize: 2048})
				require.NoError(b, err)
				defer s.Close()
				subs[i] = s
			}
			ev := event(b, "hot", 1)
			data, err := codec.Encode(ev)
			require.NoError(b, err)
			var batch []*fanout.Entry
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				h.Dispatch(ev, data)
				if i%1024 == 1023 { // drain, as the streams do, in batches
					for _, s := range subs {
						batch = s.Take(batch[:0])
					}
				}
			}
		})
	}
}
