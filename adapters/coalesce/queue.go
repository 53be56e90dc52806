// Package coalesce holds Queue, a bounded FIFO queue that, when it fills up,
// drops superseded items — older items of a key that has a newer one queued —
// oldest first, down to the latest item of each key.
//
// Every event of statusbroadcaster carries a project's full record, so an
// older event of a project is worth nothing once a newer one is queued
// behind it. That makes a queue that coalesces under pressure the right
// buffer wherever a consumer may fall behind: the broadcaster's outbox when
// the pub/sub is slow or down, and each subscriber's queue when it reads
// slowly. Memory stays bounded, order per key is kept, and the latest state
// of every key survives as long as fewer keys than the bound are pending.
package coalesce

import (
	"errors"
	"sync"
)

// ErrFull is returned by Push when the queue is at its limit and coalescing
// cannot make enough room: nearly every queued item has a key of its own.
var ErrFull = errors.New("coalesce: queue full")

// shrinkKeys is how many keys the per-key counts may have held before a
// drained queue drops the map rather than keep the grown one (Go maps
// never shrink); the next Push makes a fresh one.
const shrinkKeys = 16

// Queue is a bounded FIFO of items of type T, identified by a key. It is
// safe for concurrent use by any number of producers and consumers.
type Queue[T any] struct {
	key   func(T) string
	limit int
	// minGain is the fewest duplicates that make coalescing worth its O(n)
	// pass; with fewer, Push reports ErrFull at once. It bounds the amortised
	// cost of Push to O(1).
	minGain int

	mu sync.Mutex
	// items and counts are allocated by the first Push: a queue that
	// never got an item (an idle subscriber's) holds neither.
	items  []T
	counts map[string]int // queued items per key
	// peakKeys is the most keys counts has held since it was last drained.
	// Go maps never shrink, so after a burst of many keys Take replaces it.
	peakKeys int
	ready    chan struct{} // has a value while items is not empty
}

// New returns an empty queue that holds at most limit items (at least 1).
func New[T any](limit int, key func(T) string) *Queue[T] {
	limit = max(limit, 1)
	return &Queue[T]{
		key:     key,
		limit:   limit,
		minGain: max(1, limit/16),
		ready:   make(chan struct{}, 1),
	}
}

// Push appends item. When the queue is full it first drops the oldest items
// that have a newer item of the same key queued — up to an eighth of the
// limit, keeping the order of the rest — and coalesced says how many it
// dropped. Repeated pressure drops more, down to the latest item per key.
// When there is nothing (or too little) to drop, Push returns ErrFull and
// does not queue item: the caller decides whether to evict (EvictOldest) or
// give up on the consumer.
func (q *Queue[T]) Push(item T) (coalesced int, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.limit {
		if len(q.items)-len(q.counts) < q.minGain {
			return 0, ErrFull
		}
		coalesced = q.coalesceLocked(max(q.minGain, q.limit/8))
	}
	q.items = append(q.items, item)
	if q.counts == nil {
		q.counts = make(map[string]int)
	}
	q.counts[q.key(item)]++
	q.peakKeys = max(q.peakKeys, len(q.counts))
	q.signalLocked()
	return coalesced, nil
}

// Full reports whether the queue holds its limit of items, so that the
// next Push has to coalesce.
func (q *Queue[T]) Full() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) >= q.limit
}

// EvictOldest removes the oldest item, and reports whether there was one.
func (q *Queue[T]) EvictOldest() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero T
	if len(q.items) == 0 {
		return zero, false
	}
	item := q.items[0]
	q.items[0] = zero
	q.items = q.items[1:]
	q.forgetLocked(item)
	return item, true
}

// coalesceLocked drops, oldest first, up to target items that have a
// newer item of the same key queued, keeping the order of the rest. It
// frees room gradually: a momentary hiccup of the consumer costs a few
// intermediate states, not all of them.
func (q *Queue[T]) coalesceLocked(target int) int {
	kept := q.items[:0]
	dropped := 0
	for _, item := range q.items {
		if dropped < target {
			if k := q.key(item); q.counts[k] > 1 {
				q.counts[k]--
				dropped++
				continue
			}
		}
		kept = append(kept, item)
	}
	clear(q.items[len(kept):])
	q.items = kept
	return dropped
}

// reuseItems is the largest backing array a drained queue keeps: enough
// for a consumer that keeps up, which drains a few items at a time, to
// allocate nothing per drain; a larger one, left by a burst, would stay
// with an idle consumer for good.
const reuseItems = 16

// Take removes and returns up to max items from the front (all of them
// when max <= 0), appended to dst.
func (q *Queue[T]) Take(dst []T, max int) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.items)
	if max > 0 && max < n {
		n = max
	}
	dst = append(dst, q.items[:n]...)
	for _, item := range q.items[:n] {
		q.forgetLocked(item)
	}
	if n == len(q.items) {
		// Reuse a small backing array (a consumer that keeps up drains a
		// few items at a time: no allocation per drain), but start afresh
		// rather than keep a large one (or a map grown by a burst of many
		// keys) alive.
		if cap(q.items) <= reuseItems {
			clear(q.items)
			q.items = q.items[:0]
		} else {
			q.items = nil
		}
		if q.peakKeys > shrinkKeys {
			q.counts = nil
		}
		q.peakKeys = 0
	} else {
		clear(q.items[:n])
		q.items = q.items[n:]
		q.signalLocked()
	}
	return dst
}

// Wake makes Ready have a value, so that a consumer waiting on it looks
// again (for something outside the queue).
func (q *Queue[T]) Wake() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.signalLocked()
}

// Filter removes every item for which keep returns false, and returns how
// many it removed.
func (q *Queue[T]) Filter(keep func(T) bool) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	kept := q.items[:0]
	for _, item := range q.items {
		if keep(item) {
			kept = append(kept, item)
		} else {
			q.forgetLocked(item)
		}
	}
	removed := len(q.items) - len(kept)
	clear(q.items[len(kept):])
	q.items = kept
	return removed
}

// Len returns the number of queued items.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Ready returns a channel that has a value when items may be queued: after
// a receive from it, call Take. A receive does not guarantee items (another
// consumer may have taken them), so consumers loop.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

func (q *Queue[T]) forgetLocked(item T) {
	k := q.key(item)
	if q.counts[k] <= 1 {
		delete(q.counts, k)
	} else {
		q.counts[k]--
	}
}

func (q *Queue[T]) signalLocked() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
