package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
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
func (s *Server) stream(w http.ResponseWriter, r *http.Request, topics []domain.Topic) {
	snapshot := true
	if v := r.URL.Query().Get("snapshot"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "snapshot must be true or false")
			return
		}
		snapshot = b
	}
	lastID := r.Header.Get("Last-Event-ID")
	if lastID == "" {
		lastID = r.URL.Query().Get("lastEventId")
	}
	select {
	case <-s.closing:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "server is shutting down")
		return
	default:
	}
	if n := s.streams.Add(1); n > int64(s.cfg.MaxClients) {
		s.streams.Add(-1)
		s.cfg.Metrics.StreamRejected()
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "too many open streams (limit "+strconv.Itoa(s.cfg.MaxClients)+"); retry later")
		return
	}
	defer s.streams.Add(-1)

	sub, err := s.hub.Subscribe(fanout.SubscribeOptions{
		Topics:      topics,
		QueueSize:   s.cfg.QueueSize,
		Snapshot:    snapshot,
		LastEventID: lastID,
	})
	if err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "cannot subscribe: "+err.Error())
		return
	}
	defer sub.Close()
	s.cfg.Metrics.StreamsChanged(1)
	defer s.cfg.Metrics.StreamsChanged(-1)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	if r.ProtoMajor == 1 {
		h.Set("Connection", "keep-alive")
	}
	w.WriteHeader(http.StatusOK)

	st := &sseWriter{rc: http.NewResponseController(w), w: w, timeout: s.cfg.WriteTimeout}
	st.buf.WriteString("retry: " + strconv.FormatInt(s.cfg.Retry.Milliseconds(), 10) + "\n\n")
	if err := st.flush(); err != nil {
		return
	}

	heartbeat := time.NewTimer(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	var batch []*fanout.Entry
	for {
		select {
		case <-sub.Ready():
			batch = sub.Take(batch[:0])
			if err := st.events(batch); err != nil {
				s.log.Debug("stream write failed; client will resume", "error", err, "remote", r.RemoteAddr)
				return
			}
			clear(batch)
		case <-heartbeat.C:
			st.buf.WriteString(": heartbeat\n\n")
			if err := st.flush(); err != nil {
				return
			}
		case <-sub.Done():
			// Too slow (fanout.ErrSlowSubscriber) or the hub closed: end
			// the stream; EventSource reconnects and resumes from its
			// last id.
			if errors.Is(sub.Err(), fanout.ErrSlowSubscriber) {
				s.log.Info("ending a stream that fell behind", "remote", r.RemoteAddr)
			}
			return
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		}
		heartbeat.Reset(s.cfg.Heartbeat)
	}
}

// sseWriter writes Server-Sent Events frames with a deadline per write.
type sseWriter struct {
	rc      *http.ResponseController
	w       http.ResponseWriter
	timeout time.Duration
	buf     bytes.Buffer
}

// events writes entries as frames, in as few writes as writeChunk allows.
func (st *sseWriter) events(entries []*fanout.Entry) error {
	for _, e := range entries {
		st.buf.WriteString("id: ")
		st.buf.WriteString(e.ID)
		st.buf.WriteString("\nevent: ")
		st.buf.WriteString(string(e.Event.Type))
		st.buf.WriteString("\ndata: ")
		st.buf.Write(e.Data)
		st.buf.WriteString("\n\n")
		if st.buf.Len() >= writeChunk {
			if err := st.flush(); err != nil {
				return err
			}
		}
	}
	if st.buf.Len() == 0 {
		return nil
	}
	return st.flush()
}

// flush writes the buffer to the client and flushes it through, within the
// write deadline.
func (st *sseWriter) flush() error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	_, err := st.w.Write(st.buf.Bytes())
	st.buf.Reset()
	if err != nil {
		return err
	}
	return st.rc.Flush()
}
