package fanout_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Entry.Frame renders an entry once, however many subscribers ask for it
// and however concurrently.
func TestEntryFrameIsBuiltOnce(t *testing.T) {
	h := fanout.NewHub(fanout.Config{})
	defer h.Close()
	e := dispatch(t, h, "a1")[0]
	var calls atomic.Int32
	encode := func(e *fanout.Entry) []byte {
		calls.Add(1)
		return []byte("frame of " + e.ID)
	}
	frames := make([][]byte, 16)
	var wg sync.WaitGroup
	for i := range frames {
		wg.Go(func() { frames[i] = e.Frame(encode) })
	}
	wg.Wait()
	assert.Equal(t, int32(1), calls.Load())
	for _, f := range frames {
		require.Equal(t, "frame of "+e.ID, string(f))
		assert.Same(t, &frames[0][0], &f[0], "one shared slice")
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
