package fanout

import (
	"slices"
	"sort"
)

// Position is where an event lies in a partitioned log that every reader
// reads in the same order per partition (Kafka: the record's partition and
// offset). Offsets grow within a partition; they need not be contiguous.
type Position struct {
	Partition int32
	Offset    int64
}

// CursorCodec turns a hub's position in a partitioned log into an event id
// and back. The transport defines it (the hub knows nothing of Kafka): an
// id is opaque to clients, and Decode refuses what this codec did not make
// (another topic, garbage).
type CursorCodec interface {
	// Encode returns the id of the position vec: for each partition the
	// hub has read, the offset of the last event read from it, sorted by
	// partition. It must not keep vec.
	Encode(vec []Position) string
	// Decode returns the vector an id encodes, sorted by partition, one
	// entry per partition, or false.
	Decode(id string) ([]Position, bool)
}

// partitionState is what the hub knows of one partition of the log.
type partitionState struct {
	// floor is the highest offset of the partition whose successors are
	// not all in the history: the offset of the last event of the
	// partition evicted from it, or the offset before the first event the
	// hub read (nothing before it was read). A resume from an offset below
	// floor is not exact.
	floor int64
	// since is the seq of the first event of the partition the hub read
	// after its offsets went backwards (0 if they never did): the history's
	// older events of the partition belong to a log that is gone.
	since uint64
	// refs lists the partition's events in the history (of its current
	// log), oldest first: where a replay from a position starts.
	refs []posRef
}

// posRef is an event of a partition in the history.
type posRef struct {
	seq    uint64
	offset int64
}

// vectorIndex returns the index of partition p in the sorted vector vec.
func vectorIndex(vec []Position, p int32) (int, bool) {
	return slices.BinarySearchFunc(vec, p, func(x Position, p int32) int {
		switch {
		case x.Partition < p:
			return -1
		case x.Partition > p:
			return 1
		}
		return 0
	})
}

// advanceLocked records pos, the position of the event seq, as the hub's
// position in its partition. When the partition's offsets go backwards
// (the topic was recreated or truncated), the partition starts again from
// pos: its older events in the history are no longer replayed.
func (h *Hub) advanceLocked(pos Position, seq uint64) {
	i, found := vectorIndex(h.vector, pos.Partition)
	switch {
	case !found:
		h.vector = slices.Insert(h.vector, i, pos)
		h.parts[pos.Partition] = &partitionState{floor: pos.Offset - 1}
	case pos.Offset <= h.vector[i].Offset:
		// Backwards: what the history holds of this partition, and every
		// id naming it, speak of a log that is gone.
		h.parts[pos.Partition] = &partitionState{floor: pos.Offset - 1, since: seq}
	}
	h.vector[i].Offset = pos.Offset
	st := h.parts[pos.Partition]
	st.refs = append(st.refs, posRef{seq: seq, offset: pos.Offset})
}

// evictLocked records that e leaves the history.
func (h *Hub) evictLocked(e *Entry) {
	if e == nil || !e.hasPos {
		return
	}
	st := h.parts[e.pos.Partition]
	if st == nil || e.Seq < st.since {
		return // of a log that is gone
	}
	st.floor = max(st.floor, e.pos.Offset)
	if len(st.refs) > 0 && st.refs[0].seq == e.Seq {
		st.refs[0] = posRef{}
		st.refs = st.refs[1:]
	}
}

// replayStartLocked returns the seq a replay from vec continues after: just
// before the oldest event of the history past vec (h.seq when there is
// none), so that a client that was nearly up to date costs a few entries,
// not a walk through the whole history under the lock.
func (h *Hub) replayStartLocked(vec []Position) uint64 {
	start := h.seq
	for _, p := range h.vector {
		refs := h.parts[p.Partition].refs
		k := 0
		if i, named := vectorIndex(vec, p.Partition); named {
			k = sort.Search(len(refs), func(j int) bool { return refs[j].offset > vec[i].Offset })
		}
		if k < len(refs) {
			start = min(start, refs[k].seq-1)
		}
	}
	return start
}

// resumeVectorLocked reports whether the history holds every event past
// vec: each partition vec names is one the hub reads, at an offset the hub
// has reached and not below its floor; a partition vec does not name has
// lost nothing from the history since its first record.
func (h *Hub) resumeVectorLocked(vec []Position) bool {
	for _, p := range vec {
		i, found := vectorIndex(h.vector, p.Partition)
		if !found || p.Offset > h.vector[i].Offset {
			return false // unknown partition, or beyond what was read
		}
		st := h.parts[p.Partition]
		if p.Offset < st.floor {
			return false // events right after it left the history, or were never read
		}
	}
	for _, p := range h.vector {
		if _, named := vectorIndex(vec, p.Partition); !named && h.parts[p.Partition].floor != -1 {
			return false // events of the partition before the history began
		}
	}
	return true
}

// pastVector reports whether e lies past vec: it is an event a client at
// vec has not seen.
func (h *Hub) pastVectorLocked(vec []Position, e *Entry) bool {
	if !e.hasPos {
		return true
	}
	if st := h.parts[e.pos.Partition]; st != nil && e.Seq < st.since {
		return false // from a log that is gone
	}
	i, named := vectorIndex(vec, e.pos.Partition)
	return !named || e.pos.Offset > vec[i].Offset
}
