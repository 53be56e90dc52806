package httpapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/netip"
	"runtime"
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
	// Auth, when set, protects the streams, POST /events and the project
	// queries: a request needs a token it accepts (401 otherwise) whose
	// grants cover what it asks for (403 otherwise). Nil: everyone may
	// read and publish everything.
	Auth Authenticator
	// DisableMetrics leaves GET /metrics out (statusd then serves it on
	// a listener of its own, --metrics-addr).
	DisableMetrics bool

	// CORSOrigins are the exact origins ("https://status.example.com")
	// whose pages may call the API from a browser, credentials included
	// (rs/cors). Empty: no CORS headers at all.
	CORSOrigins []string
	// MaxClientsPerIP bounds the concurrent streams of one client address
	// (an IPv6 client: its /64); the next gets 429 with Retry-After.
	// 0: no limit.
	MaxClientsPerIP int
	// TrustedProxies are the peers whose X-Forwarded-For is believed: the
	// client address of a request from one of them is the right-most
	// address of X-Forwarded-For that is not a trusted proxy. Empty: the
	// peer is always the client.
	TrustedProxies []netip.Prefix
	// PublishRate limits POST /events to this many events per second per
	// PublishRateKey, with bursts of PublishBurst; over it, 429 with
	// Retry-After. 0: no limit.
	PublishRate float64
	// PublishBurst is the burst of PublishRate. Default: PublishRate
	// rounded up, at least 1.
	PublishBurst int
	// PublishRateKey is who a POST /events is counted against. Default
	// RateLimitKey: the key an authentication middleware set with
	// WithRateLimitKey (the token subject), else the client address.
	PublishRateKey func(*http.Request) string
	// PublishRateKeys bounds the rate-limit buckets kept (idle ones are
	// forgotten as soon as they have refilled). Default 100,000.
	PublishRateKeys int
	// BodyReadTimeout is how long a client has to send a request body; a
	// client that dribbles it is cut (408 when it is still listening).
	// Default 10s.
	BodyReadTimeout time.Duration
	// Accept, when set, takes each valid POSTed event instead of the Bus:
	// POST /events answers 202 only once it returned nil (the durable
	// accept: the event is committed to the transactional outbox), 400
	// for an error wrapping domain.ErrInvalidEvent, 503 for any other.
	Accept func(ctx context.Context, ev domain.Event) error
	// Projects, when set, serves GET /projects and /projects/{id} instead
	// of the hub's latest events (a database: it survives restarts).
	Projects ProjectStore
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
	if c.PublishBurst <= 0 {
		c.PublishBurst = max(1, int(math.Ceil(c.PublishRate)))
	}
	if c.PublishRateKey == nil {
		c.PublishRateKey = RateLimitKey
	}
	if c.PublishRateKeys <= 0 {
		c.PublishRateKeys = 100_000
	}
	if c.BodyReadTimeout <= 0 {
		c.BodyReadTimeout = 10 * time.Second
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

	perAddr        addrCounter   // open streams per client address, for MaxClientsPerIP
	publishLimiter *keyedLimiter // nil when PublishRate is off
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
	mux.HandleFunc("POST /events", s.authenticated(s.postEvent, false))
	mux.HandleFunc("GET /events", s.authenticated(s.streamSelected, true))
	mux.HandleFunc("GET /events/projects", s.authenticated(s.streamAll, true))
	mux.HandleFunc("GET /events/projects/{id}", s.authenticated(s.streamProject, true))
	mux.HandleFunc("GET /projects", s.authenticated(s.listProjects, false))
	mux.HandleFunc("GET /projects/{id}", s.authenticated(s.getProject, false))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if !cfg.DisableMetrics {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /{$}", s.dashboard)
	if cfg.PublishRate > 0 {
		s.publishLimiter = newKeyedLimiter(cfg.PublishRate, cfg.PublishBurst, cfg.PublishRateKeys)
	}
	s.handler = s.harden(jsonErrors(mux))
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
	if !s.allowPublish(w, r) {
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return
	}
	// The body is read into a pooled buffer: the decoded event copies what
	// it keeps, so the buffer goes back to the pool (io.ReadAll allocated
	// about 2 KiB per 1 KiB event, the largest allocation of a POST).
	buf := bufPool.Get().(*bytes.Buffer)
	defer putBuf(buf)
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	body := buf.Bytes()
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, "body larger than "+byteSize(s.cfg.MaxBodyBytes))
			return
		}
		if isReadTimeout(err) {
			s.cfg.Metrics.RequestRejected(metrics.RejectedBodyTimeout)
			writeError(w, http.StatusRequestTimeout, "the body did not arrive within "+s.cfg.BodyReadTimeout.String())
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
	if !s.access(r).Publish.CoversProject(ev.Project.ID) {
		forbidden(w, "the token does not grant publish on "+ev.Topic().String())
		return
	}
	if s.cfg.Accept != nil {
		s.accept(w, r, ev)
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
	// Let the outbox take the event before this goroutine writes the 202:
	// the broadcast readied the outbox's goroutine, which otherwise waits
	// for the answer's write (a syscall that also wakes the client) and
	// whatever else this processor has queued. Measured in the ORDER
	// scenario: the outbox took an event 135 µs after the POST was sent
	// (p50) without the yield, 90 µs with it (BENCHMARKS.md).
	runtime.Gosched()
	writeJSON(w, http.StatusAccepted, acceptedBody{Topic: ev.Topic().String()})
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := domain.ValidateProjectID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !s.access(r).Subscribe.CoversProject(id) {
		forbidden(w, "the token does not grant subscribe on "+domain.ProjectTopic(id).String())
		return
	}
	if s.cfg.Projects != nil {
		s.getStoredProject(w, r, id)
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
