package httpapi

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// listingIDs is how many projects GET /projects looks up in the hub at a
// time (one short hold of its lock per group).
const listingIDs = 256

// listProjects serves GET /projects: the JSON array of the latest record of
// every project, by id. The body is written as it is read from the hub, a
// group of projects at a time, through one buffer of writeChunk bytes: the
// memory a request holds does not grow with the number of projects (the
// sorted id list it walks is shared by every request until the set of
// projects changes, and each record is served as the bytes already in the
// cache, not decoded and re-encoded). At most MaxListings are served at a
// time; the next gets 503 with Retry-After.
func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	select {
	case s.listings <- struct{}{}:
		defer func() { <-s.listings }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many GET /projects at a time (limit "+strconv.Itoa(s.cfg.MaxListings)+"); retry later")
		return
	}
	if s.cfg.Projects != nil {
		s.listStoredProjects(w, r)
		return
	}
	var allow func(string) bool // nil: every project
	if readable := s.access(r).Subscribe; !readable.Covers(domain.AllProjects) {
		allow = readable.CoversProject // only the projects the token may read
	}
	s.writeProjects(w, r, allow)
}

// writeProjects writes the JSON array of the latest record of every project
// for which allow returns true (every project when allow is nil), ordered by
// id. Each write has WriteTimeout as its deadline; the whole response must
// go at MinRate at least (after a first WriteTimeout); when the
// server shuts down it gets at most endGrace more. A response that misses
// any of these is cut (the client sees a broken body, never a short array
// that looks whole).
func (s *Server) writeProjects(w http.ResponseWriter, r *http.Request, allow func(projectID string) bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	lw := &limitedWriter{
		rc: http.NewResponseController(w), w: w,
		timeout: s.cfg.WriteTimeout, minRate: s.cfg.MinRate, start: time.Now(),
	}
	stop := context.AfterFunc(s.closing, lw.cut)
	defer stop()

	buf := listingBufs.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= 2*writeChunk {
			buf.Reset()
			listingBufs.Put(buf)
		}
	}()
	buf.WriteByte('[')
	ids := s.bus.SortedIDs()
	entries := make([]*fanout.Entry, 0, listingIDs)
	first := true
	for i := 0; i < len(ids); i += listingIDs {
		entries = s.bus.LatestOf(entries[:0], ids[i:min(i+listingIDs, len(ids))])
		for _, e := range entries {
			if allow != nil && !allow(e.ProjectID()) {
				continue
			}
			if !first {
				buf.WriteByte(',')
			}
			first = false
			buf.Write(e.ProjectJSON())
			if buf.Len() >= writeChunk {
				if err := lw.send(buf.Bytes()); err != nil {
					s.log.Debug("GET /projects cut", "error", err, "remote", r.RemoteAddr)
					panic(http.ErrAbortHandler) // no closing chunk: the body is incomplete
				}
				buf.Reset()
			}
		}
		clear(entries)
	}
	buf.WriteString("]\n")
	if err := lw.send(buf.Bytes()); err != nil {
		s.log.Debug("GET /projects cut", "error", err, "remote", r.RemoteAddr)
		panic(http.ErrAbortHandler)
	}
}

// listingBufs holds the write buffers of GET /projects.
var listingBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// limitedWriter writes a non-stream response with a deadline per write, a
// minimum average rate, and a short end when the server shuts down.
type limitedWriter struct {
	rc      *http.ResponseController
	w       http.ResponseWriter
	timeout time.Duration
	minRate int // bytes per second; 0: no minimum
	start   time.Time
	sent    int

	mu     sync.Mutex
	endsAt time.Time // set by cut: the response must be done by then
}

// errTooSlow ends a response that does not go at its minimum rate.
var errTooSlow = &timeoutError{"the client reads slower than the minimum rate"}

type timeoutError struct{ msg string }

func (e *timeoutError) Error() string { return e.msg }

func (lw *limitedWriter) send(p []byte) error {
	if budgetSpent(lw.start, lw.sent, lw.timeout, lw.minRate) {
		return errTooSlow
	}
	lw.mu.Lock()
	deadline := time.Now().Add(lw.timeout)
	if !lw.endsAt.IsZero() && lw.endsAt.Before(deadline) {
		deadline = lw.endsAt
	}
	_ = lw.rc.SetWriteDeadline(deadline)
	lw.mu.Unlock()
	n, err := lw.w.Write(p)
	lw.sent += n
	if err != nil {
		return err
	}
	return lw.rc.Flush()
}

// cut gives the response at most endGrace more: the server shuts down.
func (lw *limitedWriter) cut() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.endsAt = time.Now().Add(min(lw.timeout, endGrace))
	_ = lw.rc.SetWriteDeadline(lw.endsAt)
}

// budgetSpent reports whether a response or backlog that started at start
// and has sent sent bytes is behind its budget: grace, plus the time sent
// takes at minRate bytes per second.
func budgetSpent(start time.Time, sent int, grace time.Duration, minRate int) bool {
	if minRate <= 0 || start.IsZero() {
		return false
	}
	allowed := grace + time.Duration(float64(sent)/float64(minRate)*float64(time.Second))
	return time.Since(start) > allowed
}
