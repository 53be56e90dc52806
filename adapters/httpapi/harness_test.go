package httpapi_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// gateway is the real wiring on loopback: an in-memory Bus, the HTTP API
// and an httptest server.
type gateway struct {
	bus *pubsub.Bus
	api *httpapi.Server
	srv *httptest.Server
	reg *prometheus.Registry
}

// newGateway starts a gateway; tweak adjusts the configs before start.
func newGateway(t *testing.T, tweak func(*pubsub.Config, *httpapi.Config)) *gateway {
	t.Helper()
	reg := prometheus.NewRegistry()
	g := &gateway{reg: reg}
	m := metrics.New(reg, func() float64 { return float64(g.bus.OutboxDepth()) })
	busCfg := pubsub.Config{Metrics: m}
	apiCfg := httpapi.Config{Metrics: m, Gatherer: reg}
	if tweak != nil {
		tweak(&busCfg, &apiCfg)
	}
	bus, err := pubsub.NewInMemory(busCfg, nil)
	require.NoError(t, err)
	g.bus = bus
	if apiCfg.Ready == nil {
		apiCfg.Ready = bus.Ready
	}
	g.api = httpapi.New(apiCfg, bus, nil)
	g.srv = httptest.NewUnstartedServer(g.api)
	g.srv.Config.RegisterOnShutdown(g.api.CloseStreams)
	g.srv.Start()
	t.Cleanup(func() {
		g.api.CloseStreams()
		g.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, bus.Close(ctx))
	})
	require.Eventually(t, func() bool { return bus.Ready(context.Background()) == nil }, 5*time.Second, time.Millisecond)
	return g
}

// sseEvent is one parsed Server-Sent Events frame.
type sseEvent struct {
	ID, Event, Data string
	Comment         bool // a ':' line only (heartbeat)
	Retry           string
}

// stream is an open SSE response, read frame by frame.
type stream struct {
	t      *testing.T
	resp   *http.Response
	frames chan sseEvent
	cancel context.CancelFunc
}

// openStream GETs path with headers and returns the open stream; the
// response must be 200 text/event-stream.
func (g *gateway) openStream(t *testing.T, path string, header http.Header) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.srv.URL+path, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		cancel()
		_ = resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s", path)
	}
	require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	s := &stream{t: t, resp: resp, frames: make(chan sseEvent, 1024), cancel: cancel}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	_ = s.resp.Body.Close()
}

func (s *stream) read() {
	defer close(s.frames)
	sc := bufio.NewScanner(s.resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var ev sseEvent
	fields := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if fields > 0 {
				s.frames <- ev
			}
			ev, fields = sseEvent{}, 0
			continue
		}
		fields++
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
			ev.Comment = true
		case "id":
			ev.ID = value
		case "event":
			ev.Event = value
		case "data":
			ev.Data = value
		case "retry":
			ev.Retry = value
		}
	}
}

// next returns the next event frame, skipping comments and retry hints.
func (s *stream) next() sseEvent {
	s.t.Helper()
	for {
		select {
		case ev, ok := <-s.frames:
			require.True(s.t, ok, "stream ended")
			if ev.Event != "" {
				return ev
			}
		case <-time.After(10 * time.Second):
			require.FailNow(s.t, "no event on the stream")
		}
	}
}

// quiet asserts that no event frame arrives within d.
func (s *stream) quiet(d time.Duration) {
	s.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev, ok := <-s.frames:
			if !ok {
				return
			}
			require.Empty(s.t, ev.Event, "unexpected event %+v", ev)
		case <-deadline:
			return
		}
	}
}

// post POSTs body to /events with content type ct.
func (g *gateway) post(t *testing.T, ct, body string) (*http.Response, string) {
	t.Helper()
	resp, err := g.srv.Client().Post(g.srv.URL+"/events", ct, strings.NewReader(body))
	require.NoError(t, err)
	return resp, readBody(t, resp)
}

func (g *gateway) get(t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	resp, err := g.srv.Client().Get(g.srv.URL + path)
	require.NoError(t, err)
	return resp, readBody(t, resp)
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var b strings.Builder
	_, err := bufio.NewReader(resp.Body).WriteTo(&b)
	require.NoError(t, err)
	return b.String()
}

// envelope returns the JSON of a project_updated (or project_error, when
// reason is set) envelope for project id, numbered n.
func envelope(id string, n int, reason string) string {
	p := fmt.Sprintf(`{"id":%q,"name":"app-%d","status":"compiling","code_repo":"https://github.com/u/a","docs_repo":"https://github.com/u/a_docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"}`, id, n)
	if reason != "" {
		p = strings.Replace(p, `"compiling"`, `"failed"`, 1)
		return fmt.Sprintf(`{"event":"project_error","project":%s,"error":%q}`, p, reason)
	}
	return fmt.Sprintf(`{"event":"project_updated","project":%s}`, p)
}

func project(id string, n int) domain.Project {
	return domain.Project{ID: id, Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling}
}
