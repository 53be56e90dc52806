package httpapi_test

// The slow-client policy, in process: a client that stops reading is ended
// (its queue is bounded; coalescing cannot help when every pending event is
// about another project), the others get everything, and the ended client
// resumes with Last-Event-ID without a gap.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// smallBuffers gives every accepted connection a small socket send buffer,
// so that a client that stops reading blocks the server's writes after
// kilobytes rather than after the megabytes loopback buffers can hold.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// bigEvent broadcasts version 1 of project id, about 1 KiB of JSON.
func bigEvent(t testing.TB, g *sseGateway, id string) {
	t.Helper()
	p := versioned(id, 1)
	p.CodeRepo += "?padding=" + strings.Repeat("x", 800)
	require.NoError(t, g.bus.BroadcastProjectUpdate(p))
}

// stalledClient opens a stream over a raw connection with a small receive
// buffer, reads up to the retry hint (so it is subscribed), and then reads
// nothing until told to.
type stalledClient struct {
	conn net.Conn
	resp *http.Response
}

func openStalled(t *testing.T, g *sseGateway, path string) *stalledClient {
	t.Helper()
	conn, err := net.Dial("tcp", g.srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4<<10))
	req, err := http.NewRequest(http.MethodGet, g.url(path), nil)
	require.NoError(t, err)
	require.NoError(t, req.Write(conn))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 512), req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	line, err := bufio.NewReaderSize(resp.Body, 16).ReadString('\n')
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(line, "retry:"), line)
	return &stalledClient{conn: conn, resp: resp}
}

func TestStalledClientIsEndedAndResumesWithoutGap(t *testing.T) {
	t.Parallel()
	const n = 2_000 // events, each about another project, about 1 KiB each
	g := newSSEGatewayWith(t, pubsub.Config{OutboxCapacity: 2 * n, Hub: fanout.Config{History: 2 * n}},
		httpapi.Config{QueueSize: 256, WriteTimeout: 2 * time.Second},
		func(l net.Listener) net.Listener { return smallBuffers{l} })

	stalled := openStalled(t, g, "/events/projects?snapshot=false")
	var readers []*sseStream
	for range 2 {
		s := g.openStream(t, "/events/projects?snapshot=false", nil)
		s.start()
		readers = append(readers, s)
	}
	// Broadcast in bursts of 100 (a queue of 256 absorbs a burst): the
	// readers get everything, in order, while the stalled client holds its
	// stream.
	ids := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("p%04d", i)
	}
	for burst := 0; burst < n; burst += 100 {
		for _, id := range ids[burst : burst+100] {
			bigEvent(t, g, id)
		}
		for _, s := range readers {
			for _, id := range ids[burst : burst+100] {
				_, ev := s.events(1)
				require.Equal(t, id, ev[0].Project.ID)
			}
		}
	}
	// The gateway ends the stalled stream by itself.
	require.Eventually(t, func() bool { return g.api.OpenStreams() == 2 }, waitFor, 10*time.Millisecond,
		"the stalled stream was not ended")

	// The client wakes up, reads what reached it, and resumes from the
	// last complete event.
	got := readAvailable(t, stalled)
	require.Less(t, len(got), n, "the stalled client cannot have received everything")
	t.Logf("the stalled client had received %d of %d events when its stream was ended", len(got), n)
	var last string
	for i, f := range got {
		ev := f.decode(t)
		require.Equal(t, ids[i], ev.Project.ID, "what arrived before the end is in order")
		last = f.ID
	}
	path := "/events/projects"
	var header http.Header
	if last != "" {
		header = lastID(last)
	} else {
		path += "?snapshot=false" // it received nothing; a fresh start would get the snapshot
	}
	resumed := g.openStream(t, path, header)
	resumed.start()
	for i := len(got); i < n; i++ {
		_, ev := resumed.events(1)
		require.Equal(t, ids[i], ev[0].Project.ID, "the replay continues exactly after the last event received")
	}
	g.update(t, "after", 1)
	_, ev := resumed.events(1)
	assert.Equal(t, "after", ev[0].Project.ID, "nothing replayed twice")
}

// readAvailable reads the stalled stream to its end and returns the
// complete event frames it had received.
func readAvailable(t *testing.T, c *stalledClient) []frame {
	t.Helper()
	require.NoError(t, c.conn.SetReadDeadline(time.Now().Add(waitFor)))
	s := &sseStream{t: t, resp: c.resp, frames: make(chan frame, 1<<15), done: make(chan struct{})}
	s.read() // until the end of the stream (clean, or cut by the server)
	var out []frame
	for f := range s.frames {
		if f.Comment == "" && f.Event != "" {
			out = append(out, f)
		}
	}
	var netErr net.Error
	if errors.As(s.err, &netErr) && netErr.Timeout() {
		require.Fail(t, "the server did not close the stalled stream")
	}
	return out
}

// A resumed stream whose replay ends in a chunk with nothing for it (its
// project's events are older than the last stretch of history read) is
// live and idle afterwards, not a slow reader of a backlog: heartbeats go
// on and the stream stays open (it used to be ended at its first
// heartbeat as "too slow", again at every reconnection).
func TestIdleResumedStreamIsNotEndedAsSlow(t *testing.T) {
	t.Parallel()
	g := newSSEGateway(t, fanout.Config{}, httpapi.Config{Heartbeat: 300 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	g.update(t, "a", 1)
	g.settle(t, "a", 1)
	first := g.openStream(t, "/events/projects/a", nil)
	first.start()
	id := first.nextEvent().ID
	first.close()
	for v := 1; v <= 5_000; v++ { // more than one stretch of history, none of it about a
		g.update(t, "b", v)
	}
	g.settle(t, "b", 5_000)

	s := g.openStream(t, "/events/projects/a", lastID(id))
	s.start()
	deadline := time.After(2 * time.Second) // several heartbeats, each longer than WriteTimeout
	heartbeats := 0
	for {
		select {
		case f := <-s.frames:
			require.Empty(t, f.Event, "nothing was missed: no event to replay")
			heartbeats++
		case <-s.done:
			require.Failf(t, "the resumed idle stream was ended", "after %d heartbeats (%v)", heartbeats, s.err)
		case <-deadline:
			assert.GreaterOrEqual(t, heartbeats, 2, "an idle stream gets heartbeats")
			return
		}
	}
}
