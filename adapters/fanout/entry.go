package fanout

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Entry is one event as the hub delivers it. Entries are shared by every
// subscriber, the latest-event cache and the history, and must not be
// modified.
//
// An entry keeps the event once, as its envelope JSON (Data), plus the few
// fields the hub and the gateway need without decoding it: the project id,
// the event type and where the project record lies in Data. The decoded
// envelope is not kept (it was a second copy of every string of the record);
// Event decodes it on demand.
type Entry struct {
	// Seq numbers the events the hub has seen, from 1, without gaps.
	Seq uint64
	// ID is the opaque, unique id of the event (the SSE "id:" field).
	ID string
	// Data is the envelope JSON, encoded once for everyone: compact, one
	// line, in the codec's canonical form.
	Data []byte

	projectID string
	typ       domain.EventType
	// project is where the project record's JSON lies in Data.
	projectStart, projectEnd uint32
	// pos is where the event lies in a partitioned log, when hasPos (see
	// Hub.DispatchAt).
	pos    Position
	hasPos bool
	// dispatched is when the hub dispatched the entry (made it, just
	// before taking its lock), on the monotonic clock since clockStart.
	dispatched time.Duration
}

// clockStart anchors Entry.dispatched on the monotonic clock.
var clockStart = time.Now()

// SinceDispatch returns how long ago the hub dispatched the entry.
func (e *Entry) SinceDispatch() time.Duration { return time.Since(clockStart) - e.dispatched }

// ProjectID returns the id of the project the entry is about.
func (e *Entry) ProjectID() string { return e.projectID }

// Type returns the event type ("project_updated" or "project_error").
func (e *Entry) Type() domain.EventType { return e.typ }

// Event decodes and returns the envelope. It decodes Data every time: call
// it where the decoded event is needed (the library's inboxes), not on the
// hot path of a gateway, which only copies Data.
func (e *Entry) Event() domain.Event {
	// Data is json.Marshal of the event (newEntry), so it decodes; not
	// validated again (Dispatch may have been given any event).
	var ev domain.Event
	_ = json.Unmarshal(e.Data, &ev)
	return ev
}

// ProjectJSON returns the JSON of the project record inside Data (a
// sub-slice of it, not a copy): what GET /projects serves without decoding
// and re-encoding the record.
func (e *Entry) ProjectJSON() []byte { return e.Data[e.projectStart:e.projectEnd:e.projectEnd] }

// newEntry builds the entry of ev. data should be ev's canonical envelope
// JSON (codec.FromMessage's); anything else (nil, another layout) is
// re-encoded, so that Data is always canonical and the project record can be
// located in it. data is kept as it is when its capacity is close to its
// length, as the codec's output is (a copy per event was 7 % of statusd's
// allocations); otherwise it is copied to a slice of its own, so that a
// window into a larger read buffer does not pin that buffer for as long as
// the entry is cached. (A window that ends where the buffer ends cannot be
// told from a slice of its own: callers pass the JSON alone.)
func newEntry(ev domain.Event, data []byte) *Entry {
	e := &Entry{projectID: ev.Project.ID, typ: internType(ev.Type), dispatched: time.Since(clockStart)}
	start, end, ok := projectSpan(ev, data)
	if ok {
		e.Data = data
		if cap(data)-len(data) > len(data)/8 {
			e.Data = bytes.Clone(data) // do not pin a larger buffer
		}
	} else {
		canonical, err := json.Marshal(ev)
		if err != nil {
			canonical = []byte(`{}`)
		}
		e.Data = canonical
		start, end, ok = projectSpan(ev, canonical)
		if !ok {
			start, end = 0, 0
		}
	}
	e.projectStart, e.projectEnd = uint32(start), uint32(end)
	return e
}

// internType returns the package constant for the known event types, so
// that entries do not each hold a copy of the type's string.
func internType(t domain.EventType) domain.EventType {
	switch t {
	case domain.EventProjectUpdated:
		return domain.EventProjectUpdated
	case domain.EventProjectError:
		return domain.EventProjectError
	}
	return t
}

// projectSpan locates the project record in data, the canonical encoding
// of ev (json.Marshal of domain.Event):
//
//	{"event":"<type>","project":{…}}
//	{"event":"<type>","project":{…},"error":"<reason>"}
func projectSpan(ev domain.Event, data []byte) (start, end int, ok bool) {
	typ, err := json.Marshal(string(ev.Type))
	if err != nil {
		return 0, 0, false
	}
	prefix := `{"event":` + string(typ) + `,"project":`
	if !bytes.HasPrefix(data, []byte(prefix)) {
		return 0, 0, false
	}
	suffix := "}"
	if ev.Error != "" {
		reason, err := json.Marshal(ev.Error)
		if err != nil {
			return 0, 0, false
		}
		suffix = `,"error":` + string(reason) + "}"
	}
	if !bytes.HasSuffix(data, []byte(suffix)) || len(data) < len(prefix)+len(suffix)+2 || len(data) > 1<<31 {
		return 0, 0, false
	}
	start, end = len(prefix), len(data)-len(suffix)
	if data[start] != '{' || data[end-1] != '}' {
		return 0, 0, false
	}
	return start, end, true
}
