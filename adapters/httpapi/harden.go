package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/cors"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
)

// MaxHeaderBytes is the http.Server.MaxHeaderBytes statusd serves with:
// a request whose header is larger gets 431 from net/http (which reads up
// to 4 KiB past it before it refuses).
const MaxHeaderBytes = 16 << 10

// harden wraps the API with what protects it from browsers of other sites
// and from clients that misbehave, outermost first:
//
//   - CORS (rs/cors) for the listed origins, so that even a refusal below
//     is readable by a page of a listed origin;
//   - the client address, resolved once (trusted proxies);
//   - a read deadline for request bodies;
//   - the per-address limit of concurrent streams.
func (s *Server) harden(next http.Handler) http.Handler {
	var h http.Handler = hardened{s: s, next: next}
	if len(s.cfg.CORSOrigins) == 0 {
		return h
	}
	return cors.New(cors.Options{
		AllowedOrigins:   s.cfg.CORSOrigins,
		AllowedMethods:   []string{http.MethodGet, http.MethodHead, http.MethodPost},
		AllowedHeaders:   []string{"Authorization", "Content-Type", "Last-Event-ID"},
		ExposedHeaders:   []string{"Retry-After"},
		AllowCredentials: true,
		MaxAge:           600,
	}).Handler(h)
}

// hardened is harden's handler under CORS. It is a type rather than a
// closure in a HandlerFunc, and its work is in methods, to keep its frames
// small: they lie under every stream for as long as the stream lasts (see
// onFreshStack).
type hardened struct {
	s    *Server
	next http.Handler
}

func (h hardened) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	r = s.withClientAddr(r)
	s.limitBodyRead(w, r)
	if s.cfg.MaxClientsPerIP > 0 && isStreamRequest(r) {
		// Here rather than in a method of its own: one frame less under
		// a counted stream.
		key, ok := s.acquireAddr(w, r)
		if !ok {
			return
		}
		defer s.perAddr.release(key)
	}
	h.next.ServeHTTP(w, r)
}

// acquireAddr counts one more stream for the client of r, or answers 429.
func (s *Server) acquireAddr(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := addrKey(ClientAddr(r))
	if !s.perAddr.acquire(key, s.cfg.MaxClientsPerIP) {
		s.cfg.Metrics.RequestRejected(metrics.RejectedClientsPerIP)
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusTooManyRequests, "too many open streams from "+key+
			" (limit "+strconv.Itoa(s.cfg.MaxClientsPerIP)+"); retry later")
		return "", false
	}
	return key, true
}

// isStreamRequest reports whether r asks for one of the stream endpoints.
func isStreamRequest(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return p == "/events" || p == "/events/projects" || strings.HasPrefix(p, "/events/projects/")
}

// limitBodyRead gives a request with a body BodyReadTimeout to deliver
// it: a client that dribbles its body is cut when the deadline passes,
// whatever the handler does with the body (net/http also reads what a
// handler left unread under the same deadline). Once the body has been
// read to its end, net/http clears the deadline itself as it starts
// reading the connection in the background (to notice a client that goes
// away), so a handler that works on after reading its body keeps a live
// request context (TestBodyDeadlineIsLiftedOnceTheBodyIsRead).
func (s *Server) limitBodyRead(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	// Not supported by a test recorder: then there is nothing to cut.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
}

// isReadTimeout reports whether err is a body read that missed its
// deadline.
func isReadTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// addrCounter counts open streams per client address.
type addrCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire counts one more stream for key unless key has limit already.
func (c *addrCounter) acquire(key string, limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] >= limit {
		return false
	}
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[key]++
	return true
}

func (c *addrCounter) release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[key] <= 1 {
		delete(c.n, key)
		return
	}
	c.n[key]--
}

// ParseOrigins parses a comma-separated list of exact origins, as
// --cors-origins takes them: each "scheme://host" or "scheme://host:port",
// without a path, a wildcard or "null".
func ParseOrigins(list string) ([]string, error) {
	var out []string
	for _, o := range strings.Split(list, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		u, err := url.Parse(o)
		switch {
		case err != nil:
			return nil, fmt.Errorf("origin %q: %w", o, err)
		case strings.Contains(o, "*"):
			return nil, fmt.Errorf("origin %q: wildcards are not accepted; list exact origins", o)
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.User != nil,
			u.Path != "", u.RawQuery != "", u.Fragment != "", u.Opaque != "":
			return nil, fmt.Errorf("origin %q: want scheme://host[:port], e.g. https://status.example.com", o)
		}
		out = append(out, strings.ToLower(o))
	}
	return out, nil
}
