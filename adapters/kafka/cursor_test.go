package kafka_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Ids are short, opaque, decode to what they encode, and only for their
// topic.
func TestCursorCodec(t *testing.T) {
	c := kafka.NewCursorCodec("statusbroadcaster.project-events")
	six := func(offset int64) []fanout.Position {
		vec := make([]fanout.Position, 6)
		for i := range vec {
			vec[i] = fanout.Position{Partition: int32(i), Offset: offset + int64(i)}
		}
		return vec
	}
	for _, tt := range []struct {
		vec  []fanout.Position
		size int
	}{
		{six(2_000_000 - 10), 36},
		{six(1<<35 - 10), 52},
		{[]fanout.Position{{Partition: 0, Offset: 0}}, 7},
		{[]fanout.Position{{Partition: 3, Offset: 17}, {Partition: 1 << 30, Offset: 1<<63 - 1}}, 25},
	} {
		id := c.Encode(tt.vec)
		assert.Len(t, id, tt.size, "%q", id)
		got, ok := c.Decode(id)
		require.True(t, ok, id)
		assert.Equal(t, tt.vec, got)
		_, ok = kafka.NewCursorCodec("another.topic").Decode(id)
		assert.False(t, ok, "another topic's codec refuses it")
	}
	for _, bad := range []string{"", "k", "kAAA", "x" + c.Encode(six(1))[1:], "abcdefgh-12", c.Encode(six(1)) + "=", "k" + string(make([]byte, 5000))} {
		_, ok := c.Decode(bad)
		assert.False(t, ok, "%q", bad)
	}
}

// BenchmarkDispatchAt compares, in one run, the work of one event with
// the hub's own ids (Dispatch) and with a gateway's ids over 6 partitions
// (DispatchAt with this package's CursorCodec), one subscriber.
func BenchmarkDispatchAt(b *testing.B) {
	for _, positions := range []bool{false, true} {
		b.Run(fmt.Sprintf("positions=%t", positions), func(b *testing.B) {
			h := fanout.NewHub(fanout.Config{Cursor: kafka.NewCursorCodec("bench")})
			defer h.Close()
			s, err := h.Subscribe(fanout.SubscribeOptions{Topics: []domain.Topic{domain.AllProjects}, QueueSize: 2048})
			require.NoError(b, err)
			defer s.Close()
			ev, err := domain.NewProjectUpdated(pubsubtest.Project("hot", 1))
			require.NoError(b, err)
			data, err := codec.Encode(ev)
			require.NoError(b, err)
			var batch []*fanout.Entry
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if positions {
					h.DispatchAt(ev, data, fanout.Position{Partition: int32(i % 6), Offset: int64(1_000_000 + i)})
				} else {
					h.Dispatch(ev, data)
				}
				if i%1024 == 1023 {
					batch = s.Take(batch[:0])
				}
			}
		})
	}
}
