package httpapi_test

// The SSE gateway's contract, over real HTTP on loopback: retry hint and
// heartbeats, snapshots, Last-Event-ID resume, order, limits and shutdown.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestStreamStartsWithHeadersAndRetryHint(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{Retry: 1500 * time.Millisecond})
	for _, path := range []string{"/events/projects", "/events/projects/p1", "/events?topic=projects:*&topic=projects:p1"} {
		t.Run(path, func(t *testing.T) {
			resp := g.get(t, path, nil)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			assert.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"), resp.Header.Get("Content-Type"))
			assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
			assert.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
			// The connection of a stream is not reused for another request,
			// which would inherit the stream's last write deadline.
			assert.True(t, resp.Close, "Connection: close")
			assert.Equal(t, []string{"chunked"}, resp.TransferEncoding, "chunked, so a clean end is distinguishable from a cut")
			s := readStream(t, resp)
			assert.Equal(t, frame{Retry: "1500"}, s.next())
			s.close()
		})
	}
}

func TestIdleStreamGetsHeartbeats(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{Heartbeat: 50 * time.Millisecond})
	s := g.openStream(t, "/events/projects/idle", nil)
	s.start()
	for range 3 {
		f := s.next()
		assert.NotEmpty(t, f.Comment, "an idle stream gets only comment lines, got %+v", f)
	}
	// Events do not stop heartbeats from coming once the stream is idle again.
	g.update(t, "idle", 1)
	assert.Equal(t, 1, version(t, s.nextEvent().decode(t).Project))
	assert.NotEmpty(t, s.next().Comment)
}

// broadcastSample broadcasts a1 b1 a2, an error of c, then b2, and waits
// until all of them are dispatched.
func broadcastSample(t *testing.T, g *sseGateway) {
	t.Helper()
	g.update(t, "a", 1)
	g.update(t, "b", 1)
	g.update(t, "a", 2)
	failed := versioned("c", 1)
	failed.Status = domain.StatusFailed
	require.NoError(t, g.bus.BroadcastProjectError(failed, "Mix deps.get failed"))
	g.update(t, "b", 2)
	g.settle(t, "b", 2) // the outbox keeps broadcast order: the others are in too
}

// ref names one update of one project: what a test expects to receive.
type ref struct {
	ID      string
	Version int
}

func refs(t testing.TB, events []domain.Event) []ref {
	out := make([]ref, len(events))
	for i, ev := range events {
		out[i] = ref{ev.Project.ID, version(t, ev.Project)}
	}
	return out
}

func TestSnapshotOnConnect(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path string
		want []ref // the latest event of each selected project, oldest first
		live ref   // a live event that the stream selects
	}{
		{"/events/projects", []ref{{"a", 2}, {"c", 1}, {"b", 2}}, ref{"a", 3}},
		{"/events/projects/c", []ref{{"c", 1}}, ref{"c", 2}},
		{"/events/projects/a", []ref{{"a", 2}}, ref{"a", 3}},
		{"/events?topic=projects:b&topic=projects:a", []ref{{"a", 2}, {"b", 2}}, ref{"b", 3}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			t.Parallel()
			g := newSSEGateway(t, fanout.Config{}, httpapi.Config{})
			broadcastSample(t, g)
			s := g.openStream(t, tc.path, nil)
			s.start()
			frames, events := s.events(len(tc.want))
			assert.Equal(t, tc.want, refs(t, events))
			ids := map[string]bool{}
			for i, f := range frames {
				assert.False(t, ids[f.ID], "every snapshot event has its own id: %q", f.ID)
				ids[f.ID] = true
				if events[i].Project.ID == "c" {
					assert.Equal(t, string(domain.EventProjectError), f.Event)
					assert.Equal(t, "Mix deps.get failed", events[i].Error, "the snapshot keeps the error")
					assert.Equal(t, domain.StatusFailed, events[i].Project.Status)
				}
			}
			// Then live events, and nothing from the snapshot again.
			g.update(t, tc.live.ID, tc.live.Version)
			liveFrames, live := s.events(1)
			assert.Equal(t, []ref{tc.live}, refs(t, live))
			assert.False(t, ids[liveFrames[0].ID])
		})
	}
}

func TestSnapshotFalseStartsWithLiveEvents(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{})
	broadcastSample(t, g)
	for _, path := range []string{"/events/projects?snapshot=false", "/events/projects/a?snapshot=false", "/events?topic=projects:a&snapshot=false"} {
		s := g.openStream(t, path, nil)
		s.start()
		g.update(t, "a", 10)
		_, events := s.events(1)
		assert.Equal(t, []ref{{"a", 10}}, refs(t, events), path)
		s.close()
	}
}

func TestStreamOfUnknownProjectHasNoSnapshot(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{})
	broadcastSample(t, g)
	s := g.openStream(t, "/events/projects/newcomer", nil) // openStream requires 200
	s.start()
	g.update(t, "a", 3) // not selected
	g.update(t, "newcomer", 1)
	_, events := s.events(1)
	assert.Equal(t, []ref{{"newcomer", 1}}, refs(t, events))
}

// withQuery adds key=value to path's query.
func withQuery(path, key, value string) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + key + "=" + url.QueryEscape(value)
}

func TestResumeSendsExactlyTheMissedEvents(t *testing.T) {
	t.Parallel()
	selectors := []struct {
		name, path string
		selects    func(id string) bool
	}{
		{"one project", "/events/projects/a", func(id string) bool { return id == "a" }},
		{"all projects", "/events/projects", func(string) bool { return true }},
		{"topic list", "/events?topic=projects:a&topic=projects:c", func(id string) bool { return id != "b" }},
	}
	for _, sel := range selectors {
		for _, how := range []string{"header", "query"} {
			t.Run(sel.name+"/"+how, func(t *testing.T) {
				t.Parallel()
				g := newSSEGateway(t, fanout.Config{}, httpapi.Config{})
				for _, id := range []string{"a", "b", "c"} {
					g.update(t, id, 1)
				}
				g.settle(t, "c", 1)

				first := g.openStream(t, sel.path, nil)
				first.start()
				var resumeFrom string
				for _, id := range []string{"a", "b", "c"} {
					if sel.selects(id) {
						resumeFrom = first.nextEvent().ID
					}
				}
				first.close()

				// Missed while disconnected:
				var want []ref
				for v := 2; v <= 4; v++ {
					for _, id := range []string{"a", "b", "c"} {
						g.update(t, id, v)
						if sel.selects(id) {
							want = append(want, ref{id, v})
						}
					}
				}
				g.settle(t, "c", 4)

				var s *sseStream
				if how == "header" {
					s = g.openStream(t, sel.path, lastID(resumeFrom))
				} else {
					s = g.openStream(t, withQuery(sel.path, "lastEventId", resumeFrom), nil)
				}
				s.start()
				frames, events := s.events(len(want))
				assert.Equal(t, want, refs(t, events), "exactly the missed events, in order, no snapshot")
				ids := map[string]bool{resumeFrom: true}
				for _, f := range frames {
					assert.False(t, ids[f.ID], "id %s delivered twice", f.ID)
					ids[f.ID] = true
				}
				// Then live, with nothing replayed twice in between.
				g.update(t, "a", 5)
				_, live := s.events(1)
				assert.Equal(t, []ref{{"a", 5}}, refs(t, live))
			})
		}
	}
}

func TestResumeFromUnusableIDGetsTheSnapshot(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{History: 5}, httpapi.Config{})
	// An id from the start, which falls out of a history of 5.
	watch := g.openStream(t, "/events/projects", nil)
	watch.start()
	g.update(t, "a", 1)
	oldID := watch.nextEvent().ID
	watch.close()
	for v := 1; v <= 10; v++ {
		if v > 1 {
			g.update(t, "a", v)
		}
		g.update(t, "b", v)
	}
	g.settle(t, "b", 10)
	epoch, _, ok := strings.Cut(oldID, "-")
	require.True(t, ok, "ids look like <epoch>-<seq>: %q", oldID)

	for _, id := range []string{
		oldID,               // older than --history
		"garbage",           // malformed
		"-",                 // malformed
		epoch + "-x",        // malformed sequence
		epoch + "-99999999", // from the future
		"zzzzzzzz-3",        // another process or an earlier run
		strings.Repeat("9", 300),
	} {
		for _, how := range []string{"header", "query"} {
			path := "/events/projects"
			var header http.Header
			if how == "header" {
				header = lastID(id)
			} else {
				path = withQuery(path, "lastEventId", id)
			}
			s := g.openStream(t, path, header) // never a 400
			s.start()
			_, events := s.events(2)
			assert.Equal(t, []ref{{"a", 10}, {"b", 10}}, refs(t, events), "id %q by %s: the snapshot", id, how)
			s.close()
		}
	}
}

func TestQueryLastEventIDYieldsToHeader(t *testing.T) {
	t.Parallel()
	// EventSource sends the header on its own reconnections; a page that
	// had to reconnect by hand put an older id in the URL. The header is
	// the newer one.
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{})
	watch := g.openStream(t, "/events/projects/a", nil)
	watch.start()
	g.update(t, "a", 1)
	id1 := watch.nextEvent().ID
	g.update(t, "a", 2)
	id2 := watch.nextEvent().ID
	watch.close()
	g.update(t, "a", 3)
	g.settle(t, "a", 3)

	s := g.openStream(t, withQuery("/events/projects/a", "lastEventId", id1), lastID(id2))
	s.start()
	_, events := s.events(1)
	assert.Equal(t, []ref{{"a", 3}}, refs(t, events))
}

// TestOrderAcrossSnapshotReplayAndLive broadcasts 10,000 rapid updates of
// one project (and a quieter one) while clients connect with a snapshot,
// disconnect, and resume: every client gets the updates of each project in
// broadcast order, without gaps or repeats from the point it joined.
func TestOrderAcrossSnapshotReplayAndLive(t *testing.T) {
	t.Parallel()
	const n = 10_000
	g := newSSEGatewayWith(t, pubsub.Config{
		OutboxCapacity: 4 * n, // no coalescing in the outbox: every update is dispatched
		Hub:            fanout.Config{History: 4 * n},
	}, httpapi.Config{QueueSize: 4 * n}, nil) // nor in the clients' queues

	live := g.openStream(t, "/events/projects/hot?snapshot=false", nil)
	live.start()
	resumer := g.openStream(t, "/events/projects", nil)
	resumer.start()

	phase2 := make(chan struct{})
	broadcastDone := make(chan struct{})
	go func() {
		defer close(broadcastDone)
		for v := 1; v <= n; v++ {
			if v == n/2+1 {
				<-phase2
			}
			assert.NoError(t, g.bus.BroadcastProjectUpdate(versioned("hot", v)))
			if v%100 == 0 {
				assert.NoError(t, g.bus.BroadcastProjectUpdate(versioned("cold", v/100)))
				if v > n/2 {
					time.Sleep(time.Millisecond) // let connections interleave with live events
				}
			}
		}
	}()

	// The resumer reads a while, then drops the connection in mid-burst.
	got := map[string][]int{}
	var last string
	for got["hot"] == nil || got["hot"][len(got["hot"])-1] < n/4 {
		f := resumer.nextEvent()
		ev := f.decode(t)
		got[ev.Project.ID] = append(got[ev.Project.ID], version(t, ev.Project))
		last = f.ID
	}
	resumer.close()

	g.settle(t, "hot", n/2)
	close(phase2)
	snap := g.openStream(t, "/events/projects/hot", nil)
	snap.start()
	resumed := g.openStream(t, "/events/projects", lastID(last))
	resumed.start()

	// The live stream: every update, in order.
	for v := 1; v <= n; v++ {
		_, ev := live.events(1)
		require.Equal(t, v, version(t, ev[0].Project), "live stream")
	}
	// The snapshot stream: the latest update at connect time, then every
	// later one.
	_, ev := snap.events(1)
	from := version(t, ev[0].Project)
	require.GreaterOrEqual(t, from, n/2, "the snapshot is at least the update settled before connecting")
	for v := from + 1; v <= n; v++ {
		_, ev := snap.events(1)
		require.Equal(t, v, version(t, ev[0].Project), "snapshot stream")
	}
	// The resumed stream: replay then live, continuing exactly where the
	// first connection stopped, for both projects.
	for got["hot"][len(got["hot"])-1] < n || len(got["cold"]) < n/100 {
		_, ev := resumed.events(1)
		got[ev[0].Project.ID] = append(got[ev[0].Project.ID], version(t, ev[0].Project))
	}
	<-broadcastDone
	for id, count := range map[string]int{"hot": n, "cold": n / 100} {
		want := make([]int, count)
		for i := range want {
			want[i] = i + 1
		}
		require.Equal(t, want, got[id], "%s over two connections", id)
	}
}

func TestMaxClientsRefusesWith503(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{MaxClients: 2})
	// The limit counts streams on every stream endpoint together.
	s1 := g.openStream(t, "/events/projects", nil)
	s1.start()
	s2 := g.openStream(t, "/events?topic=projects:x", nil)
	s2.start()

	resp := g.get(t, "/events/projects/y", nil)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	retry, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After is a number of seconds")
	assert.Positive(t, retry)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var e struct{ Error string }
	require.NoError(t, json.Unmarshal(body, &e), "%s", body)
	assert.Contains(t, e.Error, "too many open streams")

	// Other endpoints are not limited.
	for _, path := range []string{"/projects", "/healthz", "/"} {
		resp := g.get(t, path, nil)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
	}

	// A closed stream frees its slot promptly.
	s1.close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp := g.get(t, "/events/projects/y", nil)
		if resp.StatusCode == http.StatusOK {
			readStream(t, resp).start()
			break
		}
		_ = resp.Body.Close()
		require.True(t, time.Now().Before(deadline), "the slot of a closed stream was not freed")
		time.Sleep(10 * time.Millisecond)
	}
	assert.Equal(t, 2, g.api.OpenStreams())
}

func TestCloseStreamsEndsEveryStreamCleanly(t *testing.T) {
	t.Parallel()
	// The write timeout also bounds the closing chunk: long enough for a
	// busy machine, short enough to idle past it.
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{WriteTimeout: time.Second})
	var streams []*sseStream
	for _, path := range []string{"/events/projects", "/events/projects/a", "/events?topic=projects:b"} {
		s := g.openStream(t, path, nil)
		s.start()
		streams = append(streams, s)
	}
	time.Sleep(1500 * time.Millisecond) // idle for longer than the write timeout
	g.api.CloseStreams()
	for _, s := range streams {
		assert.NoError(t, s.ended(), "a clean end of stream: the closing chunk arrived")
	}
	resp := g.get(t, "/events/projects", nil)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "no new streams while shutting down")
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
	assert.Equal(t, 0, g.api.OpenStreams())
}

func TestSnapshotLargerThanTheClientQueue(t *testing.T) {
	t.Parallel()
	// A dashboard of more projects than --client-queue still connects and
	// gets every project.
	const projects = 300
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{QueueSize: 16})
	for i := range projects {
		g.update(t, fmt.Sprintf("p%03d", i), 1)
	}
	g.settle(t, fmt.Sprintf("p%03d", projects-1), 1)
	s := g.openStream(t, "/events/projects", nil)
	s.start()
	_, events := s.events(projects)
	for i, ev := range events {
		assert.Equal(t, fmt.Sprintf("p%03d", i), ev.Project.ID)
	}
}
