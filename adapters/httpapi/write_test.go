package httpapi_test

// How a stream writes: the events queued for a client while it was busy go
// out together in one write, and each event is rendered once for every
// client.

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// steppedWriter is a ResponseWriter whose every Write and Flush waits for
// the test to take it from a channel, so the test decides when the stream
// may go on.
type steppedWriter struct {
	header  http.Header
	writes  chan []byte
	flushes chan struct{}
	stop    chan struct{} // closed at the end: let the handler finish
}

func newSteppedWriter() *steppedWriter {
	return &steppedWriter{header: http.Header{}, writes: make(chan []byte), flushes: make(chan struct{}), stop: make(chan struct{})}
}

func (w *steppedWriter) Header() http.Header { return w.header }
func (w *steppedWriter) WriteHeader(int)     {}
func (w *steppedWriter) Write(p []byte) (int, error) {
	select {
	case w.writes <- bytes.Clone(p):
	case <-w.stop:
	}
	return len(p), nil
}
func (w *steppedWriter) Flush() {
	select {
	case w.flushes <- struct{}{}:
	case <-w.stop:
	}
}

func (w *steppedWriter) nextWrite(t *testing.T) []byte {
	t.Helper()
	select {
	case p := <-w.writes:
		return p
	case <-time.After(waitFor):
		require.Fail(t, "no write")
		return nil
	}
}

func (w *steppedWriter) nextFlush(t *testing.T) {
	t.Helper()
	select {
	case <-w.flushes:
	case <-time.After(waitFor):
		require.Fail(t, "no flush")
	}
}

func dispatch(t *testing.T, hub *fanout.Hub, id string, v int) {
	t.Helper()
	ev, err := domain.NewProjectUpdated(versioned(id, v))
	require.NoError(t, err)
	data, err := codec.Encode(ev)
	require.NoError(t, err)
	require.NotNil(t, hub.Dispatch(ev, data))
}

func TestQueuedEventsGoOutInOneWrite(t *testing.T) {
	t.Parallel()
	hub := fanout.NewHub(fanout.Config{})
	defer hub.Close()
	api := httpapi.New(httpapi.Config{Heartbeat: time.Hour}, hubOnly{Hub: hub}, nil)

	ctx, cancel := context.WithCancel(context.Background())
	w := newSteppedWriter()
	done := make(chan struct{})
	go func() {
		defer close(done)
		api.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/events/projects", nil))
	}()
	defer func() {
		cancel()
		close(w.stop)
		<-done
	}()

	assert.Equal(t, "retry: 2000\n\n", string(w.nextWrite(t)))
	w.nextFlush(t)

	dispatch(t, hub, "p", 1)
	first := w.nextWrite(t)
	assert.Equal(t, 1, bytes.Count(first, []byte("id: ")), "%s", first)
	// The stream is now busy (its flush is held): 49 more events queue up.
	for v := 2; v <= 50; v++ {
		dispatch(t, hub, "p", v)
	}
	w.nextFlush(t)
	second := w.nextWrite(t)
	assert.Equal(t, 49, bytes.Count(second, []byte("\nevent: project_updated\ndata: ")), "the 49 queued events in one write")
	assert.True(t, bytes.HasPrefix(second, []byte("id: ")))
	assert.Contains(t, string(second), `"name":"v000002"`)
	assert.Contains(t, string(second), `"name":"v000050"`)
	w.nextFlush(t)
}

func TestEveryClientGetsTheSameFrameBytes(t *testing.T) {
	t.Parallel()
	// The frame of an event is built once and shared: two streams get
	// byte-identical frames, with the id, the event type and the envelope
	// JSON on one data line.
	hub := fanout.NewHub(fanout.Config{})
	defer hub.Close()
	api := httpapi.New(httpapi.Config{Heartbeat: time.Hour}, hubOnly{Hub: hub}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var writers []*steppedWriter
	var dones []chan struct{}
	for _, path := range []string{"/events/projects", "/events/projects/p"} {
		w := newSteppedWriter()
		done := make(chan struct{})
		go func() {
			defer close(done)
			api.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil))
		}()
		w.nextWrite(t)
		w.nextFlush(t)
		writers, dones = append(writers, w), append(dones, done)
	}
	defer func() {
		cancel()
		for i, w := range writers {
			close(w.stop)
			<-dones[i]
		}
	}()
	dispatch(t, hub, "p", 7)
	e, ok := hub.Latest("p")
	require.True(t, ok)
	want := "id: " + e.ID + "\nevent: project_updated\ndata: " + string(e.Data) + "\n\n"
	for _, w := range writers {
		assert.Equal(t, want, string(w.nextWrite(t)))
		w.nextFlush(t)
	}
}
