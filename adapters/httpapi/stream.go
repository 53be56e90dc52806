package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// writeChunk is the most bytes a stream gathers before it writes: a client
// with a long backlog gets it in a few large writes, and the buffer a stream
// holds stays small.
const writeChunk = 32 << 10

func (s *Server) streamProject(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := domain.ValidateProjectID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.stream(w, r, []domain.Topic{domain.ProjectTopic(id)})
}

func (s *Server) streamAll(w http.ResponseWriter, r *http.Request) {
	s.stream(w, r, []domain.Topic{domain.AllProjects})
}

// streamSelected serves GET /events?topic=SEL&topic=SEL…
func (s *Server) streamSelected(w http.ResponseWriter, r *http.Request) {
	raw := r.URL.Query()["topic"]
	if len(raw) == 0 || len(raw) > s.cfg.MaxTopics {
		writeError(w, http.StatusBadRequest, "give 1 to "+strconv.Itoa(s.cfg.MaxTopics)+" topic parameters (projects:* or projects:<id>), got "+strconv.Itoa(len(raw)))
		return
	}
	topics := make([]domain.Topic, 0, len(raw))
	seen := make(map[domain.Topic]bool, len(raw))
	for _, t := range raw {
		topic, err := domain.ParseTopic(t)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if !seen[topic] {
			seen[topic] = true
			topics = append(topics, topic)
		}
	}
	s.stream(w, r, topics)
}

// stream serves one Server-Sent Events stream of the events that match
// topics: the snapshot or the replay first, then live events, with
// heartbeats while idle.
//
// An idle stream is parked for as long as its client stays connected, so
// its goroutine's stack is most of what it costs: the stream's state lives
// in a liveStream on the heap and the frames of the parked goroutine are
// small (see liveStream.run), so that the garbage collector can shrink its
// stack.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, topics []domain.Topic) {
	ls := s.setUpStream(w, r, topics)
	if ls == nil {
		return
	}
	defer ls.close()
	ls.run()
}

// setUpStream opens the stream (openStream), sends its header and first
// chunk (begin), on a fresh stack; it returns nil if the stream ends
// there.
func (s *Server) setUpStream(w http.ResponseWriter, r *http.Request, topics []domain.Topic) *liveStream {
	var ls *liveStream
	live := false
	defer func() {
		if ls != nil && !live { // refused after it opened, or a panic
			ls.close()
		}
	}()
	onFreshStack(func() {
		ls = s.openStream(w, r, topics)
		live = ls != nil && ls.begin(w)
	})
	if !live {
		return nil
	}
	return ls
}

// onFreshStack runs f on a short-lived goroutine of its own and waits for
// it; a panic in f is raised again on the caller's goroutine, where
// net/http recovers it.
//
// An idle stream's goroutine is parked for as long as its client stays, so
// its stack is most of what the stream costs, and a stack grows but
// hardly shrinks: the garbage collector halves a parked goroutine's stack
// only when less than a quarter of it is in use, and over HTTP/1.1
// net/http's conn.serve alone has a 1.1 KiB frame at the bottom of it. A
// stream's setup goes deep (a token's signature, the subscription, and
// above all net/http writing the response header: a 2.8 KiB frame,
// chunkWriter.writeHeader) and would double the goroutine's stack from 4
// to 8 KiB for good; on a goroutine that exits it costs a stack only
// while it runs. The caller waits, so the response writer and the
// request are never used concurrently.
func onFreshStack(f func()) {
	var panicked any
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() { panicked = recover() }()
		f()
	}()
	<-done
	if panicked != nil {
		panic(panicked)
	}
}

// liveStream is the state of one open stream.
type liveStream struct {
	s     *Server
	r     *http.Request
	sub   *fanout.Subscription
	st    sseWriter
	clock backlogClock
	batch []*fanout.Entry
	// heartbeat wakes the stream (sub.Wake) Heartbeat after its last
	// write, lastWrite.
	heartbeat *time.Timer
	lastWrite time.Time
	// stopCut unregisters the wake-up for the server's closing.
	stopCut func() bool
}

// openStream answers the request with an error and returns nil, or
// returns the stream, subscribed.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, topics []domain.Topic) *liveStream {
	lastID, snapshot, ok := s.admitStream(w, r, topics)
	if !ok {
		return nil
	}
	// Until the stream is returned, a panic (in the bus, in the metrics)
	// must give its slot back and close what it subscribed: the caller has
	// no stream to close.
	var sub *fanout.Subscription
	opened := false
	defer func() {
		if !opened {
			s.streams.Add(-1)
			if sub != nil {
				sub.Close()
			}
		}
	}()
	sub, err := s.bus.Subscribe(fanout.SubscribeOptions{
		Topics:       topics,
		QueueSize:    s.cfg.QueueSize,
		Snapshot:     snapshot,
		LastEventID:  lastID,
		BacklogBytes: writeChunk,
		ParkWhenFull: true,
	})
	if err != nil {
		sub = nil
		refuseSubscription(w, err)
		return nil
	}
	s.cfg.Metrics.StreamsChanged(1)
	opened = true
	return &liveStream{s: s, r: r, sub: sub}
}

// admitStream answers the request with an error and returns false, or
// counts one more stream and returns its Last-Event-ID and whether it
// asks for a snapshot.
func (s *Server) admitStream(w http.ResponseWriter, r *http.Request, topics []domain.Topic) (lastID string, snapshot, ok bool) {
	if !s.maySubscribe(w, r, topics) {
		return "", false, false
	}
	snapshot, ok = snapshotParam(r)
	if !ok {
		writeError(w, http.StatusBadRequest, "snapshot must be true or false")
		return "", false, false
	}
	lastID = r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("lastEventId")
	}
	if s.closing.Err() != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "server is shutting down")
		return "", false, false
	}
	if n := s.streams.Add(1); n > int64(s.cfg.MaxClients) {
		s.streams.Add(-1)
		s.cfg.Metrics.StreamRejected()
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "too many open streams (limit "+strconv.Itoa(s.cfg.MaxClients)+"); retry later")
		return "", false, false
	}
	return lastID, snapshot, true
}

// refuseSubscription answers 503 to a stream the bus could not subscribe.
func refuseSubscription(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	writeError(w, http.StatusServiceUnavailable, "cannot subscribe: "+err.Error())
}

// begin sends the response header and the first chunk; it returns false
// if the stream ends there.
func (ls *liveStream) begin(w http.ResponseWriter) bool {
	ls.respond(w)
	return ls.start()
}

// respond sends the response header and prepares the stream's writer.
func (ls *liveStream) respond(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if ls.r.ProtoMajor == 1 {
		// Close the connection when the stream ends rather than keep it
		// alive for another request: that request would inherit the
		// stream's last write deadline. EventSource opens a new
		// connection to resume anyway. (Still chunked, so a clean end is
		// distinguishable from a cut one. HTTP/2 forbids the header.)
		h.Set("Connection", "close")
	}
	ls.s.limitSendBuffer(ls.r.Context())
	w.WriteHeader(http.StatusOK)

	ls.st = sseWriter{rc: http.NewResponseController(w), w: w, timeout: ls.s.cfg.WriteTimeout}
	ls.stopCut = context.AfterFunc(ls.s.closing, ls.interrupt)
}

// close releases what the stream holds, and gives the response a last,
// short write deadline for its end.
func (ls *liveStream) close() {
	if ls.heartbeat != nil {
		ls.heartbeat.Stop()
	}
	if ls.stopCut != nil {
		ls.st.finish()
		ls.stopCut()
	}
	ls.s.cfg.Metrics.StreamsChanged(-1)
	ls.sub.Close()
	ls.s.streams.Add(-1)
}

// interrupt runs when the server closes its streams: it shortens a write in
// progress and wakes the stream, which ends.
func (ls *liveStream) interrupt() {
	ls.st.cut()
	ls.sub.Wake()
}

// run sends the stream until it ends. Between chunks it waits for the
// subscription's Ready, which every reason to look again but one fills:
// queued events, the end of the subscription, the server's closing, the
// heartbeat; and for the end of the request. (A select over a channel per
// reason held a runtime sudog per channel per parked stream, and a timer
// channel; a context.AfterFunc on the request's context costs more than
// its channel: a children map in the request's context.) Its frame, on
// the stack under which the goroutine parks, is kept small: the work is in
// the methods it calls.
func (ls *liveStream) run() {
	for !ls.ending() && ls.wait() && ls.step() {
	}
}

// wait waits for a reason to look again; false means the client is gone.
func (ls *liveStream) wait() bool {
	select {
	case <-ls.sub.Ready():
		return true
	case <-ls.r.Context().Done():
		return false
	}
}

// start writes the retry hint and the first chunk of the backlog
// (snapshot or replay), and sets up the wake-ups. The backlog is read
// from the hub a chunk (writeChunk bytes) at a time as the client takes
// it, so a slow client holds one chunk, not the whole snapshot.
func (ls *liveStream) start() bool {
	ls.batch = ls.sub.Take(nil)
	n, err := ls.st.write(ls.s.retryLine, ls.batch)
	if err != nil {
		return false
	}
	ls.clock.observe(ls.sub.InBacklog(), n)
	clear(ls.batch)
	ls.lastWrite = time.Now()
	ls.heartbeat = time.AfterFunc(ls.s.cfg.Heartbeat, ls.sub.Wake)
	return true
}

// ending reports whether the stream ends before its next chunk: the hub
// ended it (too slow, or closed), the server is closing, the client went
// away, or it takes its backlog too slowly. A stream so ended stops
// cleanly, even in the middle of its backlog.
func (ls *liveStream) ending() bool {
	select {
	case <-ls.sub.Done():
		ls.s.endedByHub(ls.r, ls.sub)
		return true
	default:
	}
	if ls.s.closing.Err() != nil || ls.r.Context().Err() != nil {
		return true
	}
	if ls.clock.spent(ls.s.cfg.WriteTimeout, ls.s.cfg.MinRate) {
		ls.s.cfg.Metrics.SubscriberDropped()
		ls.s.log.Info("ending a stream that takes its backlog too slowly; it will resume", "remote", ls.r.RemoteAddr,
			"sent", ls.clock.sent, "elapsed", time.Since(ls.clock.start).Round(time.Millisecond))
		return true
	}
	return false
}

// step writes what woke the stream: its next entries, or a heartbeat
// once Heartbeat has passed since its last write. It returns false when
// a write failed.
func (ls *liveStream) step() bool {
	live := !ls.sub.InBacklog()
	if !live {
		// A backlog's chunk is read under the hub's lock and its end
		// joins the hub's index (a map that may grow): deep, and rare
		// enough for a fresh stack (see onFreshStack).
		onFreshStack(ls.takeBatch)
	} else {
		ls.takeBatch()
	}
	if len(ls.batch) == 0 {
		// A wake-up for something else than entries, or a backlog chunk
		// with nothing selected; a backlog that ended so is over: stop
		// its clock.
		ls.clock.observe(ls.sub.InBacklog(), 0)
		if time.Since(ls.lastWrite) < ls.s.cfg.Heartbeat {
			return true
		}
		if _, err := ls.st.write(heartbeatLine, nil); err != nil {
			return false
		}
		ls.wrote()
		return true
	}
	n, err := ls.st.write(nil, ls.batch)
	if err != nil {
		ls.writeFailed(err)
		return false
	}
	if live {
		ls.s.cfg.Metrics.StreamDelivered(ls.batch[0].SinceDispatch())
	}
	ls.clock.observe(ls.sub.InBacklog(), n)
	clear(ls.batch)
	if cap(ls.batch) > maxKeptBatch {
		ls.batch = nil // a burst is over: do not keep its array per idle stream
	}
	ls.wrote()
	return true
}

// takeBatch takes the next entries into ls.batch.
func (ls *liveStream) takeBatch() { ls.batch = ls.sub.Take(ls.batch[:0]) }

// writeFailed logs a write of entries that failed.
func (ls *liveStream) writeFailed(err error) {
	ls.s.log.Debug("stream write failed; the client will resume", "error", err, "remote", ls.r.RemoteAddr)
}

// wrote restarts the heartbeat's count after a write.
func (ls *liveStream) wrote() {
	ls.lastWrite = time.Now()
	ls.heartbeat.Reset(ls.s.cfg.Heartbeat)
}

// endedByHub logs why the hub ended a stream's subscription.
func (s *Server) endedByHub(r *http.Request, sub *fanout.Subscription) {
	// Too slow (fanout.ErrSlowSubscriber) or the hub closed: end the
	// stream; EventSource reconnects and resumes from its last id.
	if errors.Is(sub.Err(), fanout.ErrSlowSubscriber) {
		s.log.Info("ending a stream that fell behind; it will resume", "remote", r.RemoteAddr)
	}
}

// backlogClock measures how fast a stream takes its backlog: from the first
// chunk of a backlog (snapshot, replay, catch-up after being parked) to the
// chunk that ends it.
type backlogClock struct {
	start time.Time
	sent  int
}

// observe records n bytes written; inBacklog says whether the stream is
// still in a backlog after them.
func (c *backlogClock) observe(inBacklog bool, n int) {
	if !inBacklog {
		c.start, c.sent = time.Time{}, 0
		return
	}
	if c.start.IsZero() {
		c.start = time.Now()
	}
	c.sent += n
}

// spent reports whether the backlog in progress is behind its budget:
// grace, plus its bytes at minRate.
func (c *backlogClock) spent(grace time.Duration, minRate int) bool {
	return budgetSpent(c.start, c.sent, grace, minRate)
}

// heartbeatLine is the SSE comment an idle stream gets every Heartbeat.
var heartbeatLine = []byte(": heartbeat\n\n")

// maxKeptBatch is the largest batch array a stream keeps between writes.
const maxKeptBatch = 256

// appendHead appends the fields of an entry's Server-Sent Events frame
// that come before its data: "id: <id>\nevent: <type>\ndata: ". The data
// is the envelope JSON that the codec encoded once for everyone (one line by
// construction: encoding/json escapes control characters), and a blank line
// ends the frame. The head, about 45 bytes, is written into each stream's
// buffer as it copies the data, rather than kept per entry (that was 90
// bytes more for every event in the cache and the history).
func appendHead(buf *bytes.Buffer, e *fanout.Entry) {
	buf.WriteString("id: ")
	buf.WriteString(e.ID)
	buf.WriteString("\nevent: ")
	buf.WriteString(string(e.Type()))
	buf.WriteString("\ndata: ")
}

// bufPool holds the buffers streams gather frames in. A stream borrows one
// only while it writes, so an idle stream holds none.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// putBuf returns buf to bufPool, unless it grew larger than a pooled buffer
// should stay.
func putBuf(buf *bytes.Buffer) {
	if buf.Cap() <= 2*writeChunk {
		buf.Reset()
		bufPool.Put(buf)
	}
}

// sseWriter writes Server-Sent Events to one client, with a deadline per
// write.
type sseWriter struct {
	rc      *http.ResponseController
	w       http.ResponseWriter
	timeout time.Duration

	mu       sync.Mutex // guards deadlines against cut, which runs on another goroutine
	ending   bool       // cut was called: deadlines are short from now on
	finished bool       // the handler is returning: leave the deadline alone
}

// endGrace bounds how long ending a stream may wait for its client: the
// last write when the server shuts down, the closing chunk.
const endGrace = time.Second

// write sends prefix and the frames of entries in as few writes as
// writeChunk allows: every event queued for a client since its last write
// goes out together. Nothing is encoded per client: the envelope JSON is
// encoded once per event and shared by all streams; a stream only copies
// it, behind the frame head, into its write buffer. It returns the bytes
// written.
func (st *sseWriter) write(prefix []byte, entries []*fanout.Entry) (int, error) {
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Write(prefix)
	sent := 0
	var err error
	for _, e := range entries {
		appendHead(buf, e)
		buf.Write(e.Data)
		buf.WriteString("\n\n")
		if buf.Len() >= writeChunk {
			if err = st.out(buf.Bytes()); err != nil {
				break
			}
			sent += buf.Len()
			buf.Reset()
		}
	}
	if err == nil && buf.Len() > 0 {
		if err = st.out(buf.Bytes()); err == nil {
			sent += buf.Len()
		}
	}
	// No defer: this frame lies under every write of a parked stream's
	// goroutine (see onFreshStack), and a deferred closure makes it larger.
	putBuf(buf)
	return sent, err
}

// deepWrite is the size from which a write goes deep into net/http: past
// its response buffer (2 KiB over HTTP/1.1), the write is copied to the
// connection from under Write rather than Flush, with 300 more bytes of
// frames, too many for a stream's 4 KiB stack (see onFreshStack).
const deepWrite = 2 << 10

// out is send, on a fresh stack for a write of deepWrite bytes or more (a
// backlog, a burst): a goroutine more per such write (a microsecond or
// so) against a stream's stack doubled to 8 KiB for good.
func (st *sseWriter) out(p []byte) error {
	if len(p) >= deepWrite {
		return st.sendOnFreshStack(p)
	}
	return st.send(p)
}

func (st *sseWriter) sendOnFreshStack(p []byte) (err error) {
	onFreshStack(func() { err = st.send(p) })
	return err
}

// send writes p to the client and flushes it through, within the write
// deadline.
func (st *sseWriter) send(p []byte) error {
	st.mu.Lock()
	timeout := st.timeout
	if st.ending {
		timeout = min(timeout, endGrace)
	}
	err := st.rc.SetWriteDeadline(time.Now().Add(timeout))
	st.mu.Unlock()
	if err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := st.w.Write(p); err != nil {
		return err
	}
	return st.rc.Flush()
}

// cut shortens the deadline of a write in progress when the server closes
// its streams: a client that does not read cannot hold up a shutdown for a
// whole WriteTimeout. A healthy client takes its write well within
// endGrace.
func (st *sseWriter) cut() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.finished {
		return
	}
	st.ending = true
	_ = st.rc.SetWriteDeadline(time.Now().Add(min(st.timeout, endGrace)))
}

// finish gives the server a fresh, short deadline to end the response: the
// last deadline set may have passed while the stream was idle, and the
// closing chunk must still go out so that the client sees a clean end of
// stream; a client that does not read gets no longer than endGrace.
func (st *sseWriter) finish() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.finished = true
	_ = st.rc.SetWriteDeadline(time.Now().Add(min(st.timeout, endGrace)))
}
