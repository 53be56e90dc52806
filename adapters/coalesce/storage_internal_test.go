package coalesce

import (
	"strconv"
	"testing"
)

// A queue that never got an item (an idle subscriber's: one per open
// stream) holds no storage, and a drained queue keeps none that a burst
// grew: neither the items' array nor the per-key counts.
func TestIdleQueueHoldsNoStorage(t *testing.T) {
	q := New(1000, func(s string) string { return s })
	if q.items != nil || q.counts != nil {
		t.Fatalf("a new queue holds storage: %d items' capacity, counts %v", cap(q.items), q.counts != nil)
	}

	// A consumer that keeps up: a small array and map are reused.
	_, _ = q.Push("a")
	q.Take(nil, 0)
	if cap(q.items) == 0 || q.counts == nil {
		t.Fatal("a drained queue dropped its small storage: a consumer that keeps up would allocate per drain")
	}

	// A burst of many keys: its storage goes with it.
	for i := range 200 {
		if _, err := q.Push(strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	q.Take(nil, 0)
	if q.items != nil || q.counts != nil {
		t.Fatalf("a queue drained after a burst keeps %d items' capacity, counts %v", cap(q.items), q.counts != nil)
	}
	if _, err := q.Push("b"); err != nil || q.Len() != 1 {
		t.Fatalf("Push after the storage was dropped: %v, len %d", err, q.Len())
	}
}
