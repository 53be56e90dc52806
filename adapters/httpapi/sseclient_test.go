package httpapi_test

// Helpers shared by the SSE tests: a gateway on loopback with the real
// wiring, and a small Server-Sent Events client that parses frames the way
// EventSource does.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// waitFor bounds every wait for something that must happen. It is generous
// on purpose: it only catches hangs, it measures nothing.
const waitFor = 10 * time.Second

// sseGateway is the service as statusd wires it: the in-memory Bus and the
// HTTP API, served on a loopback port.
type sseGateway struct {
	bus *pubsub.Bus
	api *httpapi.Server
	srv *httptest.Server
}

// newSSEGateway starts a gateway and registers its shutdown with t.Cleanup.
func newSSEGateway(t testing.TB, hub fanout.Config, cfg httpapi.Config) *sseGateway {
	t.Helper()
	return newSSEGatewayWith(t, pubsub.Config{Hub: hub}, cfg, nil)
}

// newSSEGatewayWith starts a gateway on the given Bus config; wrap, when not
// nil, wraps the listener.
func newSSEGatewayWith(t testing.TB, busCfg pubsub.Config, cfg httpapi.Config, wrap func(net.Listener) net.Listener) *sseGateway {
	t.Helper()
	bus, err := pubsub.NewInMemory(busCfg, nil)
	require.NoError(t, err)
	api := httpapi.New(cfg, bus, nil)
	srv := httptest.NewUnstartedServer(api)
	srv.Config.RegisterOnShutdown(api.CloseStreams)
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Start()
	g := &sseGateway{bus: bus, api: api, srv: srv}
	t.Cleanup(func() {
		api.CloseStreams() // httptest.Server.Close waits for handlers
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, bus.Close(ctx))
	})
	return g
}

// url returns the gateway's address followed by path.
func (g *sseGateway) url(path string) string { return g.srv.URL + path }

// versioned returns a valid project whose name records version n, so that a
// test can tell which update of a project a client received.
func versioned(id string, n int) domain.Project {
	t0 := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	return domain.Project{
		ID:         id,
		Name:       fmt.Sprintf("v%06d", n),
		Status:     domain.StatusCompiling,
		CodeRepo:   "https://github.com/example/" + id,
		DocsRepo:   "https://github.com/example/" + id + "_docs",
		InsertedAt: t0,
		UpdatedAt:  t0.Add(time.Duration(n) * time.Millisecond),
	}
}

// version returns the n that versioned(id, n) recorded in the name.
func version(t testing.TB, p domain.Project) int {
	t.Helper()
	var n int
	_, err := fmt.Sscanf(p.Name, "v%d", &n)
	require.NoError(t, err, "project name %q", p.Name)
	return n
}

// update broadcasts version n of project id.
func (g *sseGateway) update(t testing.TB, id string, n int) {
	t.Helper()
	require.NoError(t, g.bus.BroadcastProjectUpdate(versioned(id, n)))
}

// settle waits until version n of project id has gone through the pub/sub
// and the hub, so that streams opened from now on see it in their
// snapshot or replay.
func (g *sseGateway) settle(t testing.TB, id string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		e, ok := g.bus.Latest(id)
		return ok && e.Event().Project.Name == versioned(id, n).Name
	}, waitFor, time.Millisecond, "version %d of %s was not dispatched", n, id)
}

// frame is one Server-Sent Events frame, or one comment line.
type frame struct {
	ID      string
	Event   string
	Data    string
	Retry   string
	Comment string // the text of a ':' line; the other fields are empty
}

// decode parses the frame's data as an event envelope.
func (f frame) decode(t testing.TB) domain.Event {
	t.Helper()
	ev, err := codec.Decode([]byte(f.Data))
	require.NoError(t, err, "data %q", f.Data)
	require.Equal(t, string(ev.Type), f.Event, "the event: line names the envelope's type")
	return ev
}

// sseStream is an open stream, read by a goroutine into a channel.
type sseStream struct {
	t      testing.TB
	resp   *http.Response
	frames chan frame
	done   chan struct{} // closed when the reader stops
	err    error         // why the reader stopped; read after done
}

// openStream GETs path with the given request headers and requires 200.
func (g *sseGateway) openStream(t testing.TB, path string, header http.Header) *sseStream {
	t.Helper()
	resp := g.get(t, path, header)
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.Failf(t, "stream refused", "GET %s: %s %s", path, resp.Status, body)
	}
	return readStream(t, resp)
}

// get sends a GET request; the caller closes the body.
func (g *sseGateway) get(t testing.TB, path string, header http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.url(path), nil)
	require.NoError(t, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	return resp
}

// readStream starts reading resp as an event stream. The stream is closed
// at the end of the test if the test does not close it.
func readStream(t testing.TB, resp *http.Response) *sseStream {
	s := &sseStream{t: t, resp: resp, frames: make(chan frame, 1<<15), done: make(chan struct{})}
	go s.read()
	t.Cleanup(s.close)
	return s
}

// read parses frames as the EventSource specification does: fields up to
// a blank line, one optional space after the colon, comments on ':' lines.
func (s *sseStream) read() {
	defer close(s.done)
	defer close(s.frames)
	r := bufio.NewReader(s.resp.Body)
	var f frame
	var data []string
	pending := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if !errors.Is(err, io.EOF) || line != "" {
				s.err = err
			}
			if errors.Is(err, io.EOF) && line != "" {
				s.err = io.ErrUnexpectedEOF
			}
			return
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if pending {
				f.Data = strings.Join(data, "\n")
				s.frames <- f
			}
			f, data, pending = frame{}, nil, false
			continue
		}
		if c, ok := strings.CutPrefix(line, ":"); ok {
			s.frames <- frame{Comment: strings.TrimPrefix(c, " ")}
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		pending = true
		switch name {
		case "id":
			f.ID = value
		case "event":
			f.Event = value
		case "data":
			data = append(data, value)
		case "retry":
			f.Retry = value
		}
	}
}

// close ends the stream from the client side and waits for the reader.
func (s *sseStream) close() {
	_ = s.resp.Body.Close()
	// Drain, so that a reader blocked on a full channel can exit.
	for range s.frames {
	}
	<-s.done
}

// next returns the next frame, comments included; it fails the test if
// none comes within waitFor or the stream ends.
func (s *sseStream) next() frame {
	s.t.Helper()
	select {
	case f, ok := <-s.frames:
		if !ok {
			require.Failf(s.t, "stream ended", "while waiting for a frame: %v", s.err)
		}
		return f
	case <-time.After(waitFor):
		require.Fail(s.t, "no frame within "+waitFor.String())
	}
	return frame{}
}

// nextEvent returns the next frame that is an event, skipping comments.
func (s *sseStream) nextEvent() frame {
	s.t.Helper()
	for {
		if f := s.next(); f.Comment == "" {
			require.NotEmpty(s.t, f.Event, "frame %+v", f)
			return f
		}
	}
}

// start reads the first frame, which must be the retry hint.
func (s *sseStream) start() {
	s.t.Helper()
	f := s.next()
	require.NotEmpty(s.t, f.Retry, "a stream starts with a retry: hint, got %+v", f)
	require.Empty(s.t, f.Event)
}

// events reads n events (skipping comments) and decodes them.
func (s *sseStream) events(n int) ([]frame, []domain.Event) {
	s.t.Helper()
	frames := make([]frame, n)
	events := make([]domain.Event, n)
	for i := range n {
		frames[i] = s.nextEvent()
		events[i] = frames[i].decode(s.t)
	}
	return frames, events
}

// ended waits for the server to end the stream and returns the reader's
// error: nil for a clean end (the closing chunk arrived).
func (s *sseStream) ended() error {
	s.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case _, ok := <-s.frames:
			if !ok {
				<-s.done
				return s.err
			}
		case <-deadline:
			require.Fail(s.t, "the stream did not end within "+waitFor.String())
			return nil
		}
	}
}

// lastID returns a header asking to resume after id.
func lastID(id string) http.Header { return http.Header{"Last-Event-Id": {id}} }
