package httpapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// countingWriter is a ResponseWriter that discards what it is given and
// counts the frames and the writes.
type countingWriter struct {
	header http.Header
	frames *atomic.Int64
	writes *atomic.Int64
}

func (w countingWriter) Header() http.Header { return w.header }
func (w countingWriter) WriteHeader(int)     {}
func (w countingWriter) Flush()              {}

// SetWriteDeadline is accepted (and ignored) like a real connection's, so
// the benchmark does not count the error of an unsupported call.
func (w countingWriter) SetWriteDeadline(time.Time) error { return nil }
func (w countingWriter) Write(p []byte) (int, error) {
	w.frames.Add(int64(bytes.Count(p, []byte("\n\nid: ")) + bytes.Count(p[:min(len(p), 4)], []byte("id: "))))
	w.writes.Add(1)
	return len(p), nil
}

// hubOnly serves streams straight from a hub, with no broadcaster behind
// POST /events (the benchmark dispatches to the hub itself).
type hubOnly struct {
	*fanout.Hub
	domain.StatusBroadcaster
}

// BenchmarkStreams measures the gateway's cost per event per client: one
// op is one event delivered to every one of the streams, events arriving
// in bursts of 64. ns/op divided by the number of streams is the cost of
// a delivery; allocs/op shows that nothing is encoded or allocated per
// client.
func BenchmarkStreams(b *testing.B) {
	for _, clients := range []int{1, 100, 1_000} {
		b.Run(fmt.Sprintf("streams=%d", clients), func(b *testing.B) {
			hub := fanout.NewHub(fanout.Config{QueueSize: 1 << 14})
			defer hub.Close()
			api := httpapi.New(httpapi.Config{Heartbeat: time.Hour, MaxClients: clients}, hubOnly{Hub: hub}, nil)
			ctx, cancel := context.WithCancel(context.Background())
			var frames, writes atomic.Int64
			var wg sync.WaitGroup
			for i := range clients {
				path := "/events/projects?snapshot=false"
				if i%2 == 1 {
					path = "/events/projects/hot?snapshot=false"
				}
				w := countingWriter{header: http.Header{}, frames: &frames, writes: &writes}
				wg.Go(func() { api.ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, path, nil)) })
			}
			defer func() { cancel(); wg.Wait() }()
			for api.OpenStreams() < clients || writes.Load() < int64(clients) {
				time.Sleep(time.Millisecond) // every stream has written its retry hint
			}
			ev, err := domain.NewProjectUpdated(domain.Project{ID: "hot", Name: "hot", Status: domain.StatusCompiling,
				CodeRepo: "https://github.com/example/hot", DocsRepo: "https://github.com/example/hot_docs"})
			require.NoError(b, err)
			data, err := codec.Encode(ev)
			require.NoError(b, err)
			frames.Store(0)
			writes.Store(0)

			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				burst := min(64, b.N-sent)
				for range burst {
					hub.Dispatch(ev, data)
				}
				sent += burst
				for frames.Load() < int64(sent*clients) {
					time.Sleep(20 * time.Microsecond)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*clients), "ns/delivery")
			b.ReportMetric(float64(frames.Load())/float64(writes.Load()), "events/write")
		})
	}
}
