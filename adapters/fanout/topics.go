package fanout

import (
	"iter"
	"slices"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// fewTopics is the most topics a topicSet holds in a slice.
const fewTopics = 8

// topicSet is the set of a subscription's topics: a slice while they are
// few, as a stream's are (one, usually; a map of one topic takes about
// 200 bytes for as long as the stream lasts), a map beyond fewTopics.
type topicSet struct {
	few  []domain.Topic
	many map[domain.Topic]struct{} // nil until more than fewTopics
}

func (ts *topicSet) has(t domain.Topic) bool {
	if ts.many != nil {
		_, ok := ts.many[t]
		return ok
	}
	return slices.Contains(ts.few, t)
}

// add adds t, and reports whether it was not there yet.
func (ts *topicSet) add(t domain.Topic) bool {
	if ts.has(t) {
		return false
	}
	if ts.many != nil {
		ts.many[t] = struct{}{}
		return true
	}
	if len(ts.few) < fewTopics {
		ts.few = append(ts.few, t)
		return true
	}
	ts.many = make(map[domain.Topic]struct{}, len(ts.few)+1)
	for _, f := range ts.few {
		ts.many[f] = struct{}{}
	}
	ts.many[t] = struct{}{}
	ts.few = nil
	return true
}

// remove removes t, and reports whether it was there.
func (ts *topicSet) remove(t domain.Topic) bool {
	if ts.many != nil {
		if _, ok := ts.many[t]; !ok {
			return false
		}
		delete(ts.many, t)
		return true
	}
	i := slices.Index(ts.few, t)
	if i < 0 {
		return false
	}
	ts.few = slices.Delete(ts.few, i, i+1)
	return true
}

func (ts *topicSet) len() int {
	if ts.many != nil {
		return len(ts.many)
	}
	return len(ts.few)
}

// all yields the topics, in no particular order.
func (ts *topicSet) all() iter.Seq[domain.Topic] {
	return func(yield func(domain.Topic) bool) {
		if ts.many != nil {
			for t := range ts.many {
				if !yield(t) {
					return
				}
			}
			return
		}
		for _, t := range ts.few {
			if !yield(t) {
				return
			}
		}
	}
}
