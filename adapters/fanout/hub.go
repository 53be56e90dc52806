package fanout

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"slices"
	"sort"
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
	// Cursor, when set, makes the ids of the events dispatched with a
	// position (DispatchAt) encode the hub's position in a partitioned log
	// (every partition's last offset read), so that any hub reading the
	// same log can resume from them (SubscribeOptions.LastEventID). Events
	// dispatched without one keep ids of this hub only.
	Cursor CursorCodec
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

// orderSlot records that the latest event of project id got seq. Slots are
// appended in seq order; a slot is live while latest[id] still has its seq
// (a newer event of the project makes it dead). It holds no entry, so a
// dead slot pins no event.
type orderSlot struct {
	seq uint64
	id  string
}

// Hub delivers events to subscriptions. It is safe for concurrent use.
type Hub struct {
	cfg   Config
	epoch string // distinguishes this hub's ids from another's (another process, a restart)

	mu      sync.Mutex
	closed  bool
	seq     uint64
	history []*Entry // ring: Seq s lives at (s-1) % len
	// latest is the latest entry of each project; order lists them by
	// seq, least recently updated first, with dead slots in between
	// (compacted when they outnumber the live ones). Backlogs walk order
	// by seq, which stays valid however the cache changes meanwhile.
	latest map[string]*Entry
	order  []orderSlot
	// idsGen counts changes to the set of projects (one added or
	// forgotten); sortedIDs is the sorted id list as of sortedGen.
	idsGen, sortedGen uint64
	sortedIDs         []string
	// vector is the hub's position in a partitioned log (Config.Cursor):
	// the offset of the last event read from each partition, sorted by
	// partition; parts what it knows of each.
	vector []Position
	parts  map[int32]*partitionState

	byProject map[string]map[*Subscription]struct{}
	wildcard  map[*Subscription]struct{}
	// live holds every subscription not yet ended, including those that
	// select no topic (an Inbox before its first Subscribe) and those
	// parked, which the index does not reach but Close must end.
	live map[*Subscription]struct{}
}

// NewHub returns an empty hub.
func NewHub(cfg Config) *Hub {
	cfg.setDefaults()
	return &Hub{
		cfg:       cfg,
		epoch:     newEpoch(),
		history:   make([]*Entry, cfg.History),
		latest:    make(map[string]*Entry),
		byProject: make(map[string]map[*Subscription]struct{}),
		wildcard:  make(map[*Subscription]struct{}),
		live:      make(map[*Subscription]struct{}),
		parts:     make(map[int32]*partitionState),
	}
}

func newEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

// Dispatch numbers ev, records it as its project's latest event and in the
// history, and queues it for every subscription that selected its project,
// once each. data is ev's envelope JSON (canonical, as codec.FromMessage
// returns it; anything else is re-encoded). The hub keeps data, copied only
// when its capacity is much larger than the JSON: the caller must not
// modify it afterwards. Events of one project must be
// dispatched in order (the router does); Dispatch itself never blocks on a
// subscriber.
func (h *Hub) Dispatch(ev domain.Event, data []byte) *Entry {
	return h.dispatch(newEntry(ev, data))
}

// DispatchAt is Dispatch for an event read at pos in a partitioned log
// that other hubs read too (Kafka: partition and offset). With
// Config.Cursor set, the event's id is then the hub's position in the log
// after it, which every such hub can resume from. Events of one partition
// must be dispatched in the log's order.
func (h *Hub) DispatchAt(ev domain.Event, data []byte, pos Position) *Entry {
	e := newEntry(ev, data) // outside the lock
	e.pos, e.hasPos = pos, h.cfg.Cursor != nil
	return h.dispatch(e)
}

func (h *Hub) dispatch(e *Entry) *Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.seq++
	e.Seq = h.seq
	slot := (e.Seq - 1) % uint64(len(h.history))
	if h.cfg.Cursor != nil {
		h.evictLocked(h.history[slot])
	}
	if e.hasPos {
		h.advanceLocked(e.pos, e.Seq)
		e.ID = h.cfg.Cursor.Encode(h.vector)
	} else {
		e.ID = h.epoch + "-" + strconv.FormatUint(h.seq, 10)
	}
	h.history[slot] = e
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
	if _, ok := h.latest[id]; !ok {
		h.idsGen++
	}
	h.latest[id] = e
	h.order = append(h.order, orderSlot{seq: e.Seq, id: id})
	if len(h.latest) > h.cfg.MaxProjects {
		// Forget the project updated longest ago: the first live slot.
		for i, slot := range h.order {
			if h.liveSlotLocked(slot) {
				delete(h.latest, slot.id)
				h.idsGen++
				h.order = h.order[i+1:]
				break
			}
		}
	}
	if dead := len(h.order) - len(h.latest); dead > max(len(h.latest), 1024) {
		h.compactLocked()
	}
}

func (h *Hub) liveSlotLocked(slot orderSlot) bool {
	e, ok := h.latest[slot.id]
	return ok && e.Seq == slot.seq
}

// compactLocked drops the dead slots of order into a fresh array (so the
// one it leaves, with its head cut off by evictions, is freed).
func (h *Hub) compactLocked() {
	kept := make([]orderSlot, 0, len(h.latest)+len(h.latest)/4+16)
	for _, slot := range h.order {
		if h.liveSlotLocked(slot) {
			kept = append(kept, slot)
		}
	}
	h.order = kept
}

// pushLocked queues e for s, parks s when its queue is full (if it may be
// parked), or ends it when it cannot keep up.
func (h *Hub) pushLocked(s *Subscription, e *Entry) int {
	if s.park && s.queue.Full() {
		h.parkLocked(s, e.Seq-1)
		return 0
	}
	coalesced, err := s.queue.Push(e)
	h.cfg.Metrics.Coalesced(coalesced)
	if err != nil {
		h.cfg.Metrics.SubscriberDropped()
		h.endLocked(s, ErrSlowSubscriber)
		return 0
	}
	return 1
}

// parkLocked takes s out of the index: events are no longer queued for it,
// and cost it nothing. When its consumer takes again, it gets its queue,
// then the latest event of each of its projects updated after seq
// (coalesced, in order), then live events again (see nextBacklogLocked).
func (h *Hub) parkLocked(s *Subscription, seq uint64) {
	for t := range s.topics.all() {
		h.unindexLocked(s, t)
	}
	s.mode, s.cursor = backlogLatest, seq
	s.backlogActive.Store(true)
	s.parked++
	s.queue.Wake()
}

// Latest returns the latest event of a project, if the hub has seen one.
func (h *Hub) Latest(projectID string) (*Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.latest[projectID]
	return e, ok
}

// LatestAll returns the latest event of every project the hub remembers,
// least recently updated first. It copies the whole cache's pointers: for
// a bounded walk use SortedIDs and LatestOf.
func (h *Hub) LatestAll() []*Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*Entry, 0, len(h.latest))
	for _, slot := range h.order {
		if h.liveSlotLocked(slot) {
			out = append(out, h.latest[slot.id])
		}
	}
	return out
}

// SortedIDs returns the ids of the projects the hub remembers, sorted. The
// slice is shared by every caller until the set of projects changes, and
// must not be modified; it holds only the ids (which the entries share), so
// walking the cache in id order costs one sorted list however many walk
// it at a time.
func (h *Hub) SortedIDs() []string {
	h.mu.Lock()
	if h.sortedIDs != nil && h.sortedGen == h.idsGen {
		defer h.mu.Unlock()
		return h.sortedIDs
	}
	gen := h.idsGen
	ids := make([]string, 0, len(h.latest))
	for id := range h.latest {
		ids = append(ids, id)
	}
	h.mu.Unlock()
	slices.Sort(ids) // outside the lock: 100,000 ids take milliseconds
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sortedIDs == nil || gen >= h.sortedGen {
		h.sortedIDs, h.sortedGen = ids, gen
	}
	return ids
}

// LatestOf appends to dst the latest entry of each of ids the hub still
// remembers, in the order of ids.
func (h *Hub) LatestOf(dst []*Entry, ids []string) []*Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if e, ok := h.latest[id]; ok {
			dst = append(dst, e)
		}
	}
	return dst
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
	// BacklogBytes is about the most bytes of event data one Take returns
	// from the backlog (at least one entry). Default 32 KiB.
	BacklogBytes int
	// ParkWhenFull lets the hub park the subscription when its queue is
	// full, rather than coalesce the queue on every event and end the
	// subscription when that fails. A parked subscription is out of the
	// index and costs nothing per event; when its consumer takes again it
	// gets its queue, then the latest event of each of its projects updated
	// meanwhile, in order, then live events (see Take). Its consumer must
	// bound how long it may stay away (the SSE gateway: its write
	// deadline). Without it, a full queue coalesces and, failing that,
	// ends the subscription (what an Inbox does).
	ParkWhenFull bool
}

// backlogMode says where a subscription's backlog is read from.
type backlogMode uint8

const (
	backlogNone    backlogMode = iota
	backlogHistory             // every event after cursor, from the history (a replay)
	backlogLatest              // the latest event of each project updated after cursor (a snapshot, a catch-up)
)

// maxBacklogEntries bounds the entries one Take returns from the backlog,
// and maxBacklogScan the slots it examines under the hub's lock.
const (
	maxBacklogEntries = 1024
	maxBacklogScan    = 4096
)

// Subscribe registers a subscription with its backlog (the snapshot or the
// replay), atomically with respect to Dispatch: no event is both in the
// backlog and live, and none falls between.
//
// The backlog is not computed up front: it is a cursor (a sequence number)
// that Take advances by a bounded chunk at a time, reading the latest-event
// cache or the history as they are then. A subscriber that reads its
// backlog slowly therefore holds one chunk, not a copy of the cache, and
// pins no event the cache has since replaced. While its backlog lasts a
// subscription is out of the index — events dispatched meanwhile reach it
// through the backlog (a snapshot walks on to the newest event) — and it
// joins the index atomically when Take reaches the end.
func (h *Hub) Subscribe(opts SubscribeOptions) (*Subscription, error) {
	s := &Subscription{
		hub:          h,
		done:         make(chan struct{}),
		backlogBytes: opts.BacklogBytes,
		park:         opts.ParkWhenFull,
	}
	if s.backlogBytes <= 0 {
		s.backlogBytes = 32 << 10
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
		s.topics.add(t)
		s.wildcard = s.wildcard || t.IsWildcard()
	}
	if opts.LastEventID != "" {
		if after, ok := h.resumableLocked(opts.LastEventID); ok {
			s.resumed = true
			s.mode, s.cursor = backlogHistory, after
		} else if h.cfg.Cursor != nil {
			if vec, ok := h.cfg.Cursor.Decode(opts.LastEventID); ok && h.resumeVectorLocked(vec) {
				// The replay walks the history from the oldest event past
				// vec, skipping what lies before vec in other partitions,
				// a bounded chunk per Take.
				s.resumed = true
				s.mode, s.cursor, s.vector = backlogHistory, h.replayStartLocked(vec), vec
			}
		}
	}
	if !s.resumed && opts.Snapshot {
		s.mode, s.cursor = backlogLatest, 0
	}
	if s.mode != backlogNone && s.cursor < h.seq {
		s.backlogActive.Store(true)
	} else {
		s.mode = backlogNone
		for t := range s.topics.all() {
			h.indexLocked(s, t)
		}
	}
	h.live[s] = struct{}{}
	h.cfg.Metrics.SubscriptionsChanged(1)
	return s, nil
}

// resumableLocked parses lastID and reports the sequence number to replay
// after, if the history still holds everything after it.
func (h *Hub) resumableLocked(lastID string) (uint64, bool) {
	epoch, seqText, ok := strings.Cut(lastID, "-")
	if !ok || epoch != h.epoch {
		return 0, false
	}
	after, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil || after > h.seq {
		return 0, false
	}
	if after+1 < h.oldestLocked() {
		return 0, false // the events right after lastID are gone
	}
	return after, true
}

// oldestLocked returns the seq of the oldest event the history holds.
func (h *Hub) oldestLocked() uint64 {
	if h.seq > uint64(len(h.history)) {
		return h.seq - uint64(len(h.history)) + 1
	}
	return 1
}

// nextBacklogLocked appends the next chunk of s's backlog to dst: about
// s.backlogBytes of event data, at most maxBacklogEntries entries, after
// examining at most maxBacklogScan slots. When it reaches the newest event
// it puts s (back) into the index: from then on events are queued for it.
func (h *Hub) nextBacklogLocked(s *Subscription, dst []*Entry) []*Entry {
	if s.err != nil || s.mode == backlogNone {
		return dst
	}
	if s.mode == backlogHistory && s.cursor+1 < h.oldestLocked() {
		// The history moved on while the subscriber read its replay:
		// continue with the latest event of each project since, which is
		// the same state without the intermediate steps.
		s.mode = backlogLatest
	}
	var bytes int
	switch {
	case s.mode == backlogHistory:
		for scanned := 0; s.cursor < h.seq && scanned < maxBacklogScan; scanned++ {
			if bytes >= s.backlogBytes || len(dst) >= maxBacklogEntries {
				return dst
			}
			e := h.history[s.cursor%uint64(len(h.history))] // seq cursor+1
			s.cursor++
			if s.selectsLocked(e.ProjectID()) && (s.vector == nil || h.pastVectorLocked(s.vector, e)) {
				dst = append(dst, e)
				bytes += len(e.Data)
			}
		}
	case !s.wildcard && s.topics.len() <= maxBacklogEntries:
		// A few projects: look each up rather than walk the whole cache.
		start := len(dst)
		for t := range s.topics.all() {
			id, _ := t.ProjectID()
			if e, ok := h.latest[id]; ok && e.Seq > s.cursor && (s.vector == nil || h.pastVectorLocked(s.vector, e)) {
				dst = append(dst, e)
			}
		}
		found := dst[start:]
		slices.SortFunc(found, func(a, b *Entry) int { return compareSeq(a.Seq, b.Seq) })
		for i, e := range found {
			if i > 0 && bytes >= s.backlogBytes {
				clear(found[i:])
				dst = dst[:start+i]
				s.cursor = found[i-1].Seq
				return dst
			}
			bytes += len(e.Data)
		}
		s.cursor = h.seq
	default:
		i := sort.Search(len(h.order), func(i int) bool { return h.order[i].seq > s.cursor })
		for scanned := 0; i < len(h.order) && scanned < maxBacklogScan; i, scanned = i+1, scanned+1 {
			if bytes >= s.backlogBytes || len(dst) >= maxBacklogEntries {
				return dst
			}
			slot := h.order[i]
			s.cursor = slot.seq
			if h.liveSlotLocked(slot) && s.selectsLocked(slot.id) {
				e := h.latest[slot.id]
				if s.vector != nil && !h.pastVectorLocked(s.vector, e) {
					continue // the client had it (a replay that fell behind the history)
				}
				dst = append(dst, e)
				bytes += len(e.Data)
			}
		}
		if i == len(h.order) {
			s.cursor = h.seq
		}
	}
	if s.cursor >= h.seq {
		s.mode, s.vector = backlogNone, nil
		s.backlogActive.Store(false)
		for t := range s.topics.all() {
			h.indexLocked(s, t)
		}
	}
	return dst
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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
	for t := range s.topics.all() {
		h.unindexLocked(s, t)
	}
	delete(h.live, s)
	s.err = err
	s.mode = backlogNone
	close(s.done)
	s.queue.Wake() // a consumer that waits on Ready alone sees the end too
	h.cfg.Metrics.SubscriptionsChanged(-1)
}

type noMetrics struct{}

func (noMetrics) EventDispatched()         {}
func (noMetrics) Delivered(int)            {}
func (noMetrics) Coalesced(int)            {}
func (noMetrics) SubscriberDropped()       {}
func (noMetrics) SubscriptionsChanged(int) {}
