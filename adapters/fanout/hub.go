package fanout

import (
	"cmp"
	"container/list"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Errors that end a Subscription; Subscription.Err returns them.
var (
	// ErrClosed: the subscription or the hub was closed.
	ErrClosed = errors.New("fanout: closed")
	// ErrSlowSubscriber: the subscriber's queue was full even after
	// coalescing, because it stopped reading.
	ErrSlowSubscriber = errors.New("fanout: subscriber too slow, queue full")
)

// Entry is one event as the hub delivers it. Entries are shared by every
// subscriber and must not be modified.
type Entry struct {
	// Seq numbers the events the hub has seen, from 1, without gaps.
	Seq uint64
	// ID is the opaque, unique id of the event (the SSE "id:" field).
	ID string
	// Event is the decoded envelope.
	Event domain.Event
	// Data is the envelope JSON, encoded once for everyone.
	Data []byte

	frameOnce sync.Once
	frame     []byte
}

// Frame returns encode(e), computed by the first call and shared by every
// later one, so that an adapter renders each event in its wire format (the
// SSE gateway: "id:", "event:" and "data:" lines) once for all its clients
// rather than once per client. Every caller must pass an equivalent encode;
// the result must not be modified.
func (e *Entry) Frame(encode func(*Entry) []byte) []byte {
	e.frameOnce.Do(func() { e.frame = encode(e) })
	return e.frame
}

// ProjectID returns the id of the project the entry is about.
func (e *Entry) ProjectID() string { return e.Event.Project.ID }

// Config configures a Hub. Zero values take the defaults.
type Config struct {
	// History is how many of the latest events are kept for resume
	// (Last-Event-ID). Default 10,000.
	History int
	// MaxProjects bounds the latest-event cache: beyond it, the project
	// updated longest ago is forgotten. Default 100,000.
	MaxProjects int
	// QueueSize is the default queue bound of a subscription. Default
	// 8,192. A queue holds pointers to shared entries, so the bound costs
	// 8 bytes per slot; it only has to absorb bursts.
	QueueSize int
	// Metrics receives counts; nil counts nothing.
	Metrics Metrics
}

// Metrics is what the hub reports. *metrics.Metrics (package
// adapters/metrics, Prometheus) implements it.
type Metrics interface {
	EventDispatched()
	Delivered(n int)
	Coalesced(n int)
	SubscriberDropped()
	SubscriptionsChanged(delta int)
}

func (c *Config) setDefaults() {
	if c.History <= 0 {
		c.History = 10_000
	}
	if c.MaxProjects <= 0 {
		c.MaxProjects = 100_000
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 8192
	}
	if c.Metrics == nil {
		c.Metrics = noMetrics{}
	}
}

// Hub delivers events to subscriptions. It is safe for concurrent use.
type Hub struct {
	cfg   Config
	epoch string // distinguishes this hub's ids from another's (another process, a restart)

	mu        sync.Mutex
	closed    bool
	seq       uint64
	history   []*Entry                 // ring: Seq s lives at (s-1) % len
	latest    map[string]*list.Element // project id → element of byUpdate, value *Entry
	byUpdate  *list.List               // latest entries, least recently updated first
	byProject map[string]map[*Subscription]struct{}
	wildcard  map[*Subscription]struct{}
	// live holds every subscription not yet ended, including those that
	// select no topic (an Inbox before its first Subscribe), which the
	// index does not reach but Close must end.
	live map[*Subscription]struct{}
}

// NewHub returns an empty hub.
func NewHub(cfg Config) *Hub {
	cfg.setDefaults()
	return &Hub{
		cfg:       cfg,
		epoch:     newEpoch(),
		history:   make([]*Entry, cfg.History),
		latest:    make(map[string]*list.Element),
		byUpdate:  list.New(),
		byProject: make(map[string]map[*Subscription]struct{}),
		wildcard:  make(map[*Subscription]struct{}),
		live:      make(map[*Subscription]struct{}),
	}
}

func newEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Dispatch numbers ev, records it as its project's latest event and in the
// history, and queues it for every subscription that selected its project,
// once each. data is ev's envelope JSON. Events of one project must be
// dispatched in order (the router does); Dispatch itself never blocks on a
// subscriber.
func (h *Hub) Dispatch(ev domain.Event, data []byte) *Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.seq++
	e := &Entry{Seq: h.seq, ID: h.epoch + "-" + strconv.FormatUint(h.seq, 10), Event: ev, Data: data}
	h.history[(e.Seq-1)%uint64(len(h.history))] = e
	h.rememberLocked(e)

	delivered := 0
	for s := range h.wildcard {
		delivered += h.pushLocked(s, e)
	}
	for s := range h.byProject[e.ProjectID()] {
		if !s.wildcard {
			delivered += h.pushLocked(s, e)
		}
	}
	h.cfg.Metrics.EventDispatched()
	h.cfg.Metrics.Delivered(delivered)
	return e
}

func (h *Hub) rememberLocked(e *Entry) {
	id := e.ProjectID()
	if el, ok := h.latest[id]; ok {
		el.Value = e
		h.byUpdate.MoveToBack(el)
		return
	}
	h.latest[id] = h.byUpdate.PushBack(e)
	if h.byUpdate.Len() > h.cfg.MaxProjects {
		oldest := h.byUpdate.Front()
		h.byUpdate.Remove(oldest)
		delete(h.latest, oldest.Value.(*Entry).ProjectID())
	}
}

// pushLocked queues e for s, ending s when it cannot keep up.
func (h *Hub) pushLocked(s *Subscription, e *Entry) int {
	coalesced, err := s.queue.Push(e)
	h.cfg.Metrics.Coalesced(coalesced)
	if err != nil {
		h.cfg.Metrics.SubscriberDropped()
		h.endLocked(s, ErrSlowSubscriber)
		return 0
	}
	return 1
}

// Latest returns the latest event of a project, if the hub has seen one.
func (h *Hub) Latest(projectID string) (*Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	el, ok := h.latest[projectID]
	if !ok {
		return nil, false
	}
	return el.Value.(*Entry), true
}

// LatestAll returns the latest event of every project the hub remembers,
// least recently updated first.
func (h *Hub) LatestAll() []*Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Entry, 0, h.byUpdate.Len())
	for el := h.byUpdate.Front(); el != nil; el = el.Next() {
		out = append(out, el.Value.(*Entry))
	}
	return out
}

// Close ends every subscription with ErrClosed. Dispatch does nothing after
// Close. Close is idempotent.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.live {
		h.endLocked(s, ErrClosed)
	}
}

// SubscribeOptions says what a new subscription selects and what it gets
// before live events.
type SubscribeOptions struct {
	// Topics are the logical topics selected: project topics and/or
	// domain.AllProjects. May be empty (an Inbox adds topics later).
	Topics []domain.Topic
	// QueueSize bounds the subscription's queue; 0 takes the hub's default.
	QueueSize int
	// Snapshot queues, before live events, the latest event of each
	// selected project, oldest first.
	Snapshot bool
	// LastEventID, when set, asks for the events after that id that match
	// Topics, from the history, instead of a snapshot. When the id is
	// unknown, malformed or older than the history, the subscription gets
	// the snapshot instead (if Snapshot is set); Subscription.Resumed tells
	// which happened.
	LastEventID string
}

// Subscribe registers a subscription and computes its backlog (the snapshot
// or the replay), atomically with respect to Dispatch: every event
// dispatched after it returns is queued for it live, and no event is both
// in the backlog and live.
//
// The backlog is held apart from the bounded queue: it is a list of shared
// entries, at most MaxProjects (a snapshot) or History (a replay) of them,
// so a dashboard of more projects than QueueSize, or a resume across a
// long gap, still gets everything. Take returns it first.
func (h *Hub) Subscribe(opts SubscribeOptions) (*Subscription, error) {
	s := &Subscription{
		hub:    h,
		topics: make(map[domain.Topic]struct{}),
		done:   make(chan struct{}),
	}
	size := opts.QueueSize
	if size <= 0 {
		size = h.cfg.QueueSize
	}
	s.queue = newEntryQueue(size)

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	for _, t := range opts.Topics {
		if _, err := domain.ParseTopic(string(t)); err != nil {
			return nil, err
		}
		s.topics[t] = struct{}{}
		s.wildcard = s.wildcard || t.IsWildcard()
	}
	var backlog []*Entry
	if opts.LastEventID != "" {
		backlog, s.resumed = h.replayLocked(s, opts.LastEventID)
	}
	if !s.resumed && opts.Snapshot {
		backlog = h.snapshotLocked(s)
	}
	if len(backlog) > 0 {
		s.backlog.Store(&backlog)
	}
	for t := range s.topics {
		h.indexLocked(s, t)
	}
	h.live[s] = struct{}{}
	h.cfg.Metrics.SubscriptionsChanged(1)
	return s, nil
}

// replayLocked returns the history after lastID that s selects, and whether
// lastID could be resumed from.
func (h *Hub) replayLocked(s *Subscription, lastID string) ([]*Entry, bool) {
	epoch, seqText, ok := strings.Cut(lastID, "-")
	if !ok || epoch != h.epoch {
		return nil, false
	}
	after, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || after > h.seq {
		return nil, false
	}
	oldest := uint64(1)
	if h.seq > uint64(len(h.history)) {
		oldest = h.seq - uint64(len(h.history)) + 1
	}
	if after+1 < oldest {
		return nil, false // the events right after lastID are gone
	}
	var out []*Entry
	for seq := after + 1; seq <= h.seq; seq++ {
		e := h.history[(seq-1)%uint64(len(h.history))]
		if s.selectsLocked(e.ProjectID()) {
			out = append(out, e)
		}
	}
	return out, true
}

func (h *Hub) snapshotLocked(s *Subscription) []*Entry {
	if _, all := s.topics[domain.AllProjects]; all {
		out := make([]*Entry, 0, h.byUpdate.Len())
		for el := h.byUpdate.Front(); el != nil; el = el.Next() {
			out = append(out, el.Value.(*Entry))
		}
		return out
	}
	var out []*Entry
	for t := range s.topics {
		id, _ := t.ProjectID()
		if el, ok := h.latest[id]; ok {
			out = append(out, el.Value.(*Entry))
		}
	}
	slices.SortFunc(out, func(a, b *Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	return out
}

func (h *Hub) indexLocked(s *Subscription, t domain.Topic) {
	if t.IsWildcard() {
		s.wildcard = true
		h.wildcard[s] = struct{}{}
		return
	}
	id, _ := t.ProjectID()
	subs := h.byProject[id]
	if subs == nil {
		subs = make(map[*Subscription]struct{})
		h.byProject[id] = subs
	}
	subs[s] = struct{}{}
}

func (h *Hub) unindexLocked(s *Subscription, t domain.Topic) {
	if t.IsWildcard() {
		delete(h.wildcard, s)
		return
	}
	id, _ := t.ProjectID()
	if subs := h.byProject[id]; subs != nil {
		delete(subs, s)
		if len(subs) == 0 {
			delete(h.byProject, id)
		}
	}
}

// endLocked removes s from the index and ends it with err.
func (h *Hub) endLocked(s *Subscription, err error) {
	if s.err != nil {
		return
	}
	for t := range s.topics {
		h.unindexLocked(s, t)
	}
	delete(h.live, s)
	s.err = err
	close(s.done)
	h.cfg.Metrics.SubscriptionsChanged(-1)
}

type noMetrics struct{}

func (noMetrics) EventDispatched()         {}
func (noMetrics) Delivered(int)            {}
func (noMetrics) Coalesced(int)            {}
func (noMetrics) SubscriberDropped()       {}
func (noMetrics) SubscriptionsChanged(int) {}
