package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Heartbeat is the longest a stream stays silent: an idle stream gets
	// an SSE comment line this often, so proxies keep it open and clients
	// notice a dead connection. Default 15s.
	Heartbeat time.Duration
	// Retry is the reconnection delay hinted to EventSource clients with
	// the "retry:" field at the start of each stream. Default 2s.
	Retry time.Duration
	// WriteTimeout is the deadline of each write to a stream: a client
	// that does not take a write within it is disconnected (and resumes
	// with Last-Event-ID). Default 10s.
	WriteTimeout time.Duration
	// MaxClients bounds concurrent streams over all stream endpoints; the
	// next one gets 503 with Retry-After. Default 10,000.
	MaxClients int
	// QueueSize bounds each stream's queue (see fanout). Default: the
	// hub's.
	QueueSize int
	// MaxTopics bounds the selectors of GET /events. Default 50.
	MaxTopics int
	// MaxBodyBytes bounds the body of POST /events. Default 64 KiB.
	MaxBodyBytes int64
	// MaxListings bounds concurrent GET /projects responses; the next one
	// gets 503 with Retry-After. Default 4.
	MaxListings int
	// MinRate is the slowest average rate, in bytes per second, at
	// which a client must take a stream's backlog (snapshot, replay,
	// catch-up) or a GET /projects body, after a first WriteTimeout: a
	// client that falls behind it is ended (a stream resumes later).
	// Default 64 KiB/s; negative: no minimum.
	MinRate int
	// StreamSendBuffer is the socket send buffer of a stream's connection
	// (the kernel doubles it for its bookkeeping), when the http.Server's
	// ConnContext is Server.ConnContext. Default 64 KiB; negative: the
	// kernel's autotuning (up to megabytes per connection).
	StreamSendBuffer int
	// Metrics counts streams; nil counts nothing.
	Metrics *metrics.Metrics
	// Gatherer serves GET /metrics; nil serves the default registry.
	Gatherer prometheus.Gatherer
	// Ready, when set, decides GET /readyz: nil error means ready.
	Ready func(context.Context) error
}

func (c *Config) setDefaults() {
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.Retry <= 0 {
		c.Retry = 2 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxClients <= 0 {
		c.MaxClients = 10_000
	}
	if c.MaxTopics <= 0 {
		c.MaxTopics = 50
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.MaxListings <= 0 {
		c.MaxListings = 4
	}
	if c.MinRate == 0 {
		c.MinRate = 64 << 10
	}
	if c.StreamSendBuffer == 0 {
		c.StreamSendBuffer = 64 << 10
	}
	if c.Gatherer == nil {
		c.Gatherer = prometheus.DefaultGatherer
	}
	if c.Ready == nil {
		c.Ready = func(context.Context) error { return nil }
	}
}

// Server is the HTTP API. It is an http.Handler; call CloseStreams when the
// http.Server shuts down (http.Server.RegisterOnShutdown), because
// Shutdown waits for handlers and stream handlers only return when told.
type Server struct {
	cfg       Config
	bus       Bus
	log       *slog.Logger
	handler   http.Handler
	retryLine []byte // "retry: <ms>\n\n", the start of every stream

	streams  atomic.Int64  // open streams, for MaxClients
	listings chan struct{} // one token per GET /projects being served, for MaxListings
	// closing is done once CloseStreams was called.
	closing      context.Context
	closeStreams context.CancelFunc
}

// Bus is what the HTTP API serves: the StatusBroadcaster that POST /events
// broadcasts through, and the fan-out hub's side that streams and
// latest-state queries read (package fanout). *pubsub.Bus implements it.
type Bus interface {
	domain.StatusBroadcaster
	// Subscribe registers a stream with its snapshot or replay.
	Subscribe(opts fanout.SubscribeOptions) (*fanout.Subscription, error)
	// Latest returns the latest event of a project.
	Latest(projectID string) (*fanout.Entry, bool)
	// SortedIDs returns the ids of every project remembered, sorted
	// (shared; not to be modified).
	SortedIDs() []string
	// LatestOf appends the latest event of each of ids still remembered.
	LatestOf(dst []*fanout.Entry, ids []string) []*fanout.Entry
}

// New returns the HTTP API on bus.
func New(cfg Config, bus Bus, logger *slog.Logger) *Server {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		bus:       bus,
		log:       logger,
		retryLine: []byte("retry: " + strconv.FormatInt(cfg.Retry.Milliseconds(), 10) + "\n\n"),
		listings:  make(chan struct{}, cfg.MaxListings),
	}
	s.closing, s.closeStreams = context.WithCancel(context.Background())
	mux := http.NewServeMux()
	mux.HandleFunc("POST /events", s.postEvent)
	mux.HandleFunc("GET /events", s.streamSelected)
	mux.HandleFunc("GET /events/projects", s.streamAll)
	mux.HandleFunc("GET /events/projects/{id}", s.streamProject)
	mux.HandleFunc("GET /projects", s.listProjects)
	mux.HandleFunc("GET /projects/{id}", s.getProject)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", s.dashboard)
	s.handler = jsonErrors(mux)
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// CloseStreams ends every open stream and refuses new ones with 503, so
// that clients reconnect elsewhere. A stream that is blocked writing to a
// client that does not read gets at most a second more (or WriteTimeout,
// if shorter), so a stalled client cannot hold up a shutdown. It is
// idempotent and does not wait.
func (s *Server) CloseStreams() { s.closeStreams() }

// OpenStreams returns the number of open streams.
func (s *Server) OpenStreams() int { return int(s.streams.Load()) }

// acceptedBody is the body of a 202 from POST /events.
type acceptedBody struct {
	Topic string `json:"topic"`
}

func (s *Server) postEvent(w http.ResponseWriter, r *http.Request) {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "body larger than "+byteSize(s.cfg.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the body failed: "+err.Error())
		return
	}
	ev, err := codec.Decode(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch ev.Type {
	case domain.EventProjectError:
		err = s.bus.BroadcastProjectError(ev.Project, ev.Error)
	default:
		err = s.bus.BroadcastProjectUpdate(ev.Project)
	}
	if errors.Is(err, domain.ErrBroadcasterClosed) {
		// Shutting down: the event would be lost. Never a 202 for it.
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "not accepting events: "+err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, acceptedBody{Topic: ev.Topic().String()})
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := domain.ValidateProjectID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	e, ok := s.bus.Latest(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no project "+id+" has been broadcast")
		return
	}
	body := e.ProjectJSON() // the record as cached, not decoded and re-encoded
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(body[:len(body):len(body)], '\n'))
}

type statusBody struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, statusBody{Status: "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Ready(ctx); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, statusBody{Status: "unavailable", Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, statusBody{Status: "ready"})
}

func byteSize(n int64) string {
	if n%1024 == 0 {
		return strconv.FormatInt(n/1024, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
