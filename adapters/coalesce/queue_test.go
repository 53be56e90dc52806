package coalesce_test

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/coalesce"
)

// item is a versioned value of a key: "a1" is version 1 of key "a".
type item struct {
	key string
	ver int
}

func (i item) String() string { return i.key + strconv.Itoa(i.ver) }

func itemKey(i item) string { return i.key }

func newQueue(limit int) *coalesce.Queue[item] { return coalesce.New(limit, itemKey) }

// push queues items and fails the test on any error.
func push(t *testing.T, q *coalesce.Queue[item], items ...item) {
	t.Helper()
	for _, it := range items {
		_, err := q.Push(it)
		require.NoError(t, err, "push %s", it)
	}
}

// parse turns "a1 b1 a2" into items.
func parse(s string) []item {
	var out []item
	for _, f := range strings.Fields(s) {
		ver, _ := strconv.Atoi(f[1:])
		out = append(out, item{key: f[:1], ver: ver})
	}
	return out
}

func names(items []item) string {
	s := ""
	for i, it := range items {
		if i > 0 {
			s += " "
		}
		s += it.String()
	}
	return s
}

func ready(q *coalesce.Queue[item]) bool {
	select {
	case <-q.Ready():
		return true
	default:
		return false
	}
}

func TestFIFO(t *testing.T) {
	q := newQueue(100)
	push(t, q, parse("a1 b1 a2 c1 b2")...)
	assert.Equal(t, 5, q.Len())
	assert.Equal(t, "a1 b1 a2 c1 b2", names(q.Take(nil, 0)))
	assert.Equal(t, 0, q.Len())
	assert.Empty(t, q.Take(nil, 0))
}

func TestTakeMax(t *testing.T) {
	q := newQueue(100)
	push(t, q, parse("a1 b1 c1 d1 e1")...)

	got := q.Take(nil, 2)
	assert.Equal(t, "a1 b1", names(got))
	assert.Equal(t, 3, q.Len())

	// Take appends to dst.
	got = q.Take(got, 2)
	assert.Equal(t, "a1 b1 c1 d1", names(got))

	// A max beyond the length takes what there is; a negative max takes all.
	assert.Equal(t, "e1", names(q.Take(nil, 10)))
	push(t, q, parse("f1 g1")...)
	assert.Equal(t, "f1 g1", names(q.Take(nil, -1)))
	assert.Equal(t, 0, q.Len())
}

func TestReady(t *testing.T) {
	q := newQueue(100)
	assert.False(t, ready(q), "an empty queue is not ready")

	push(t, q, parse("a1 b1 c1")...)
	assert.True(t, ready(q), "a push makes the queue ready")
	assert.False(t, ready(q), "one value for several pushes")

	q.Take(nil, 1)
	assert.True(t, ready(q), "a partial Take leaves the queue ready for the rest")

	q.Take(nil, 0)
	assert.False(t, ready(q), "a full Take does not signal")

	push(t, q, parse("d1")...)
	assert.True(t, ready(q))
}

func TestReadyWakesWaitingConsumer(t *testing.T) {
	q := newQueue(100)
	got := make(chan []item)
	go func() {
		<-q.Ready()
		got <- q.Take(nil, 0)
	}()
	push(t, q, parse("a1")...)
	select {
	case items := <-got:
		assert.Equal(t, "a1", names(items))
	case <-time.After(5 * time.Second):
		t.Fatal("consumer waiting on Ready was not woken by Push")
	}
}

func TestPushCoalescesWhenFull(t *testing.T) {
	tests := []struct {
		name      string
		limit     int
		queued    string
		pushed    string
		coalesced int
		want      string
	}{
		{"drops the oldest superseded item first", 4, "a1 b1 a2 b2", "c1", 1, "b1 a2 b2 c1"},
		{"keeps an item whose key has no newer one", 4, "a1 b1 b2 a2", "c1", 1, "b1 b2 a2 c1"},
		{"pushed key already queued", 4, "a1 b1 a2 b2", "a3", 1, "b1 a2 b2 a3"},
		{"one key only", 3, "a1 a2 a3", "a4", 1, "a2 a3 a4"},
		{"frees an eighth of the limit", 16, "a1 a2 a3 a4 a5 a6 a7 a8 b1 b2 b3 b4 b5 b6 b7 b8", "c1", 2, "a3 a4 a5 a6 a7 a8 b1 b2 b3 b4 b5 b6 b7 b8 c1"},
		{"single duplicate is enough", 5, "a1 b1 c1 d1 a2", "e1", 1, "b1 c1 d1 a2 e1"},
		{"no coalescing below the limit", 5, "a1 a2 a3", "a4", 0, "a1 a2 a3 a4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newQueue(tt.limit)
			push(t, q, parse(tt.queued)...)
			coalesced, err := q.Push(parse(tt.pushed)[0])
			require.NoError(t, err)
			assert.Equal(t, tt.coalesced, coalesced)
			assert.Equal(t, tt.want, names(q.Take(nil, 0)))
		})
	}
}

func TestPushKeepsLatestOfEveryKeyUnderPressure(t *testing.T) {
	// Many versions of few keys through a small queue that nobody reads:
	// the latest version of every key survives, in the order of the latest.
	q := newQueue(16)
	keys := []string{"a", "b", "c", "d", "e"}
	total := 0
	for v := 1; v <= 100; v++ {
		for _, k := range keys {
			n, err := q.Push(item{key: k, ver: v})
			require.NoError(t, err)
			total += n
		}
	}
	got := q.Take(nil, 0)
	assert.Equal(t, 500, total+len(got), "every push is either queued or reported as coalesced")
	latest := got[len(got)-len(keys):]
	assert.Equal(t, "a100 b100 c100 d100 e100", names(latest))
	// Order per key holds across what is left.
	last := map[string]int{}
	for _, it := range got {
		assert.Greater(t, it.ver, last[it.key], "order of key %s", it.key)
		last[it.key] = it.ver
	}
}

func TestPushErrFullWithDistinctKeys(t *testing.T) {
	q := newQueue(4)
	push(t, q, parse("a1 b1 c1 d1")...)
	assert.True(t, q.Full())

	n, err := q.Push(item{key: "e", ver: 1})
	require.ErrorIs(t, err, coalesce.ErrFull)
	assert.Zero(t, n)
	assert.Equal(t, "a1 b1 c1 d1", names(q.Take(nil, 0)), "a refused push changes nothing")
}

func TestPushErrFullWhenCoalescingGainsTooLittle(t *testing.T) {
	// With a large queue, one duplicate among hundreds of distinct keys is
	// not worth a pass over the queue: "nearly every item has a key of its
	// own" is reported as full.
	const limit = 256
	q := coalesce.New(limit, itemKey)
	for i := range limit - 1 {
		_, err := q.Push(item{key: fmt.Sprintf("k%03d", i), ver: 1})
		require.NoError(t, err)
	}
	_, err := q.Push(item{key: "k000", ver: 2})
	require.NoError(t, err)
	require.True(t, q.Full())

	_, err = q.Push(item{key: "new", ver: 1})
	require.ErrorIs(t, err, coalesce.ErrFull)
	assert.Equal(t, limit, q.Len())
}

func TestEvictOldest(t *testing.T) {
	q := newQueue(2)
	_, ok := q.EvictOldest()
	assert.False(t, ok, "nothing to evict")

	push(t, q, parse("a1 b1")...)
	_, err := q.Push(item{key: "c", ver: 1})
	require.ErrorIs(t, err, coalesce.ErrFull)

	oldest, ok := q.EvictOldest()
	require.True(t, ok)
	assert.Equal(t, "a1", oldest.String())
	assert.False(t, q.Full())

	push(t, q, parse("c1")...)
	assert.Equal(t, "b1 c1", names(q.Take(nil, 0)))
}

func TestEvictOldestKeepsKeyCounts(t *testing.T) {
	// Evicting a1 forgets key a: after d1 the queue holds b1 b2 c1 d1, with
	// one duplicate, so the next push coalesces b1 away. Stale per-key
	// bookkeeping would refuse it (or keep a slot for a).
	q := newQueue(4)
	push(t, q, parse("a1 b1 b2 c1")...)
	_, ok := q.EvictOldest()
	require.True(t, ok)
	push(t, q, parse("d1")...)
	require.True(t, q.Full())

	n, err := q.Push(item{key: "e", ver: 1})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, "b2 c1 d1 e1", names(q.Take(nil, 0)))
}

func TestFilter(t *testing.T) {
	q := newQueue(100)
	push(t, q, parse("a1 b1 a2 c1 b2")...)
	removed := q.Filter(func(it item) bool { return it.key != "b" })
	assert.Equal(t, 2, removed)
	assert.Equal(t, 3, q.Len())
	assert.Equal(t, "a1 a2 c1", names(q.Take(nil, 0)))

	assert.Zero(t, q.Filter(func(item) bool { return false }), "filtering an empty queue")
}

func TestFilterKeepsKeyCounts(t *testing.T) {
	// a1 b1 a2 c1, drop b: a1 a2 c1; push d1 (full at 4); the next push
	// must coalesce a1 away (one duplicate), which only works if Filter
	// forgot b.
	q := newQueue(4)
	push(t, q, parse("a1 b1 a2 c1")...)
	require.Equal(t, 1, q.Filter(func(it item) bool { return it.key != "b" }))
	push(t, q, parse("d1")...)
	require.True(t, q.Full())

	n, err := q.Push(item{key: "e", ver: 1})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, "a2 c1 d1 e1", names(q.Take(nil, 0)))
}

func TestFull(t *testing.T) {
	q := newQueue(3)
	assert.False(t, q.Full())
	push(t, q, parse("a1 a2")...)
	assert.False(t, q.Full())
	push(t, q, parse("a3")...)
	assert.True(t, q.Full())
	q.Take(nil, 1)
	assert.False(t, q.Full())
}

func TestLimitIsAtLeastOne(t *testing.T) {
	for _, limit := range []int{0, -5} {
		q := newQueue(limit)
		push(t, q, parse("a1")...)
		assert.True(t, q.Full())
		n, err := q.Push(item{key: "a", ver: 2})
		require.ErrorIs(t, err, coalesce.ErrFull, "one item, no duplicate to coalesce")
		assert.Zero(t, n)
	}
}

func TestConcurrentProducersAndConsumers(t *testing.T) {
	const (
		producers = 4
		consumers = 3
		perProd   = 2_000
		total     = producers * perProd
	)
	q := coalesce.New(total, itemKey) // never full: nothing may be lost
	var taken atomic.Int64
	done := make(chan struct{})
	results := make([][]item, consumers)

	var wg sync.WaitGroup
	for c := range consumers {
		wg.Go(func() {
			var batch []item
			for {
				select {
				case <-done:
					return
				case <-q.Ready():
				}
				batch = q.Take(batch[:0], 7)
				results[c] = append(results[c], batch...)
				if len(batch) > 0 && taken.Add(int64(len(batch))) == total {
					close(done)
				}
			}
		})
	}
	for p := range producers {
		wg.Go(func() {
			key := string(rune('a' + p))
			for v := 1; v <= perProd; v++ {
				n, err := q.Push(item{key: key, ver: v})
				assert.NoError(t, err)
				assert.Zero(t, n)
			}
		})
	}
	waitOrFail(t, &wg, 10*time.Second)

	seen := make(map[item]bool, total)
	for c, got := range results {
		last := map[string]int{}
		for _, it := range got {
			assert.False(t, seen[it], "%s taken twice", it)
			seen[it] = true
			// Each Take returns a front run of the queue, so what one
			// consumer sees of a key is in order.
			assert.Greater(t, it.ver, last[it.key], "consumer %d: order of key %s", c, it.key)
			last[it.key] = it.ver
		}
	}
	assert.Len(t, seen, total)
	assert.Zero(t, q.Len())
}

func TestConcurrentProducersSingleConsumerKeepsOrderPerKey(t *testing.T) {
	const producers, perProd = 8, 1_000
	q := coalesce.New(producers*perProd, itemKey)
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for v := 1; v <= perProd; v++ {
				_, err := q.Push(item{key: strconv.Itoa(p), ver: v})
				assert.NoError(t, err)
			}
		})
	}
	last := map[string]int{}
	got := 0
	deadline := time.After(10 * time.Second)
	for got < producers*perProd {
		select {
		case <-q.Ready():
		case <-deadline:
			t.Fatalf("received %d of %d items", got, producers*perProd)
		}
		for _, it := range q.Take(nil, 0) {
			require.Equal(t, last[it.key]+1, it.ver, "key %s: gap or reorder", it.key)
			last[it.key] = it.ver
			got++
		}
	}
	waitOrFail(t, &wg, 10*time.Second)
}

func waitOrFail(t *testing.T, wg *sync.WaitGroup, d time.Duration) {
	t.Helper()
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatal("goroutines did not finish")
	}
}

// payload is large enough to be allocated on its own (not by the tiny
// allocator), so a weak pointer to it tells whether it is still reachable.
type payload struct {
	key string
	_   [64]byte // size only
}

func payloadKey(p *payload) string { return p.key }

// released reports whether the queue let go of every item whose weak
// pointer is in ws.
func released(ws []weak.Pointer[payload]) bool {
	runtime.GC()
	for _, w := range ws {
		if w.Value() != nil {
			return false
		}
	}
	return true
}

func TestRemovedItemsAreNotRetained(t *testing.T) {
	// Entries are shared events: a queue must not keep one alive after it
	// has handed it out or dropped it.
	tests := []struct {
		name   string
		layout string // the items to be removed ("x") and the others ("k")
		remove func(q *coalesce.Queue[*payload])
	}{
		{"partial Take", "xxxkkk", func(q *coalesce.Queue[*payload]) { q.Take(nil, 3) }},
		{"full Take", "xxxkkk", func(q *coalesce.Queue[*payload]) { q.Take(nil, 0) }},
		{"EvictOldest", "xxxkkk", func(q *coalesce.Queue[*payload]) {
			for range 3 {
				q.EvictOldest()
			}
		}},
		{"Filter", "kkkxxx", func(q *coalesce.Queue[*payload]) {
			q.Filter(func(p *payload) bool { return p.key == "k" })
		}},
		{"Filter, interleaved", "xkxkxk", func(q *coalesce.Queue[*payload]) {
			q.Filter(func(p *payload) bool { return p.key == "k" })
		}},
		{"coalescing", "xxkkkk", func(q *coalesce.Queue[*payload]) {
			// The older item of key x is coalesced away; the newest x
			// (the last one pushed) stays and is not watched.
			_, _ = q.Push(&payload{key: "k"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := coalesce.New(len(tt.layout), payloadKey)
			var ws []weak.Pointer[payload]
			lastX := strings.LastIndexByte(tt.layout, 'x')
			for i, c := range tt.layout {
				p := &payload{key: string(c)}
				if c == 'x' && (tt.name != "coalescing" || i != lastX) {
					ws = append(ws, weak.Make(p))
				}
				_, err := q.Push(p)
				require.NoError(t, err)
			}
			require.True(t, q.Full())

			tt.remove(q)
			assert.True(t, released(ws), "removed items are still reachable through the queue")
			runtime.KeepAlive(q)
		})
	}
}

func TestDrainedQueueDoesNotHoldBurstMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates about 20 MB")
	}
	// A subscriber that lagged through a burst of many distinct keys must
	// not keep the burst's memory once it has caught up.
	const n = 100_000
	type big struct {
		id int
		_  [56]byte // size only
	}
	keys := make([]string, n)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	q := coalesce.New(n, func(b big) string { return keys[b.id] })
	for i := range n {
		_, err := q.Push(big{id: i})
		require.NoError(t, err)
	}
	require.Len(t, q.Take(nil, 0), n)

	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(q)
	retained := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	// The burst took about 6.4 MB of items plus the per-key bookkeeping;
	// an empty queue needs next to nothing.
	assert.Less(t, retained, int64(1<<20), "a drained queue retains %d bytes", retained)
}
