package httpapi_test

// The gateway under load, as deployed: statusd is built and run as a child
// process (without the race detector, whatever the test binary has), so
// its memory is measurable from /proc/<pid>/status, and clients talk to it
// over loopback. Each client is one goroutine on a raw connection, so that
// thousands of them stay within the race detector's goroutine limit.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
)

// TestStatusdUnderLoad builds statusd once and runs each scenario against
// a fresh process of it, one after the other (they measure memory).
func TestStatusdUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs statusd under load")
	}
	bin := httpapitest.BuildStatusd(t)
	t.Run("SlowClientMemoryStaysBounded", func(t *testing.T) { testSlowClientMemory(t, bin) })
	t.Run("ManyStreamsGetEveryEvent", func(t *testing.T) { testManyStreams(t, bin) })
	t.Run("SIGTERMEndsStreamsDespiteStalledClient", func(t *testing.T) { testSIGTERM(t, bin) })
}

// poster POSTs envelopes to statusd over one keep-alive connection.
type poster struct {
	t      *testing.T
	url    string
	client *http.Client
}

func newPoster(t *testing.T, p *httpapitest.Statusd) *poster {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &poster{t: t, url: "http://" + p.Addr + "/events", client: &http.Client{Transport: tr}}
}

// update POSTs version v of project id, with pad bytes of padding in the
// code_repo URL (a project record of realistic size).
func (ps *poster) update(id string, v, pad int) error {
	body := fmt.Sprintf(`{"event":"project_updated","project":{"id":%q,"name":"v%06d","status":"compiling","code_repo":"https://github.com/example/%s?%s","docs_repo":"https://github.com/example/docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"}}`,
		id, v, id, strings.Repeat("x", pad))
	resp, err := ps.client.Post(ps.url, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST /events: %s", resp.Status)
	}
	return nil
}

// rawStream is a stream on a raw connection, read by its owner.
type rawStream struct {
	conn net.Conn
	body *bufio.Reader
}

// dialStream opens path as a stream and reads up to the end of the retry
// hint: from then on the stream is subscribed. readBuffer, when not zero,
// sets a small socket receive buffer (a client that will stall).
func dialStream(addr, path string, readBuffer int) (*rawStream, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if readBuffer > 0 {
		_ = conn.(*net.TCPConn).SetReadBuffer(readBuffer)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err := req.Write(conn); err != nil {
		_ = conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), req)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		_ = conn.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	body := bufio.NewReaderSize(resp.Body, 4096)
	if line, err := body.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		_ = conn.Close()
		return nil, fmt.Errorf("no retry hint: %q %v", line, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &rawStream{conn: conn, body: body}, nil
}

var (
	dataPrefix = []byte("data: ")
	idField    = []byte(`"id":"`)
	nameField  = []byte(`"name":"v`)
)

// nextData returns the project id and version of the next event, skipping
// everything else; io.EOF means the stream ended cleanly.
func (s *rawStream) nextData() (string, int, error) {
	for {
		line, err := s.body.ReadSlice('\n')
		if err != nil {
			return "", 0, err
		}
		data, ok := bytes.CutPrefix(line, dataPrefix)
		if !ok {
			continue
		}
		_, rest, ok1 := bytes.Cut(data, idField)
		id, _, ok2 := bytes.Cut(rest, []byte(`"`))
		_, rest, ok3 := bytes.Cut(data, nameField)
		num, _, ok4 := bytes.Cut(rest, []byte(`"`))
		v, err := strconv.Atoi(string(num))
		if !ok1 || !ok2 || !ok3 || !ok4 || err != nil {
			return "", 0, fmt.Errorf("unexpected data line %.200q", data)
		}
		return string(id), v, nil
	}
}

// readAll reads until the stream ends and reports whether it ended
// cleanly (the closing chunk arrived).
func (s *rawStream) readAll() error {
	_, err := io.Copy(io.Discard, s.body)
	return err
}

const mib = 1 << 20

// testSlowClientMemory: one client never reads while 20,000 events of
// about 1 KiB are broadcast. The other clients get every event, in order,
// and the server's memory stays bounded.
func testSlowClientMemory(t *testing.T, bin string) {
	const (
		events   = 20_000
		projects = 100
		pad      = 800 // about 1 KiB of envelope JSON
		posters  = 4
		readers  = 2
	)
	p := httpapitest.StartStatusd(t, bin, nil, "--write-timeout", "5s")
	rss0, _ := p.Memory()

	stalled, err := dialStream(p.Addr, "/events/projects", 4<<10)
	require.NoError(t, err)
	defer stalled.conn.Close()
	var wg sync.WaitGroup
	results := make([]error, readers)
	for i := range readers {
		s, err := dialStream(p.Addr, "/events/projects?snapshot=false", 0)
		require.NoError(t, err)
		wg.Go(func() {
			defer s.conn.Close()
			_ = s.conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
			next := make(map[string]int, projects)
			for range events {
				id, v, err := s.nextData()
				if err != nil {
					results[i] = err
					return
				}
				if v != next[id]+1 {
					results[i] = fmt.Errorf("project %s: got version %d after %d", id, v, next[id])
					return
				}
				next[id] = v
			}
		})
	}

	start := time.Now()
	var postErr atomic.Pointer[error]
	var pw sync.WaitGroup
	for w := range posters {
		ps := newPoster(t, p)
		pw.Go(func() {
			// Each poster owns projects w, w+posters, …: order per project
			// is the order of its POSTs.
			for n := w; n < events; n += posters {
				id := fmt.Sprintf("p%03d", n%projects)
				if err := ps.update(id, n/projects+1, pad); err != nil {
					postErr.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	pw.Wait()
	if e := postErr.Load(); e != nil {
		require.NoError(t, *e)
	}
	posted := time.Since(start)
	wg.Wait()
	delivered := time.Since(start)
	for i, err := range results {
		require.NoError(t, err, "reader %d", i)
	}

	rss, peak := p.Memory()
	goroutines := p.Metric("go_goroutines")
	t.Logf("20,000 events of ~1 KiB, one stalled client: posted in %s, all delivered to %d readers in %s; "+
		"statusd RSS %.1f MiB at start, %.1f MiB now, peak (VmHWM) %.1f MiB; %v goroutines",
		posted.Round(time.Millisecond), readers, delivered.Round(time.Millisecond),
		float64(rss0)/mib, float64(rss)/mib, float64(peak)/mib, goroutines)
	// The stock SSERouter measured 288 MB and 50,990 goroutines after
	// 50,000 events with one stalled client; the bounds are generous.
	assert.Less(t, peak, int64(150*mib), "peak RSS")
	assert.Less(t, goroutines, 100.0, "no goroutine per event or per queued event")

	// The stalled client is ended, at the latest when its write deadline
	// passes, so that it would reconnect and resume.
	require.Eventually(t, func() bool { return p.Metric("statusbroadcaster_sse_open_streams") == 0 },
		waitFor, 50*time.Millisecond, "the stalled stream was not ended")
}

// raiseFileLimit makes sure the process may open n more files.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim))
	if lim.Cur < n {
		lim.Cur = min(n, lim.Max)
		require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	}
	require.GreaterOrEqual(t, lim.Cur, n, "RLIMIT_NOFILE hard limit %d is too low for this test", lim.Max)
}

// testManyStreams: 2,000 concurrent streams each receive every one of 100
// events, in order. Also measures the memory of an idle stream.
func testManyStreams(t *testing.T, bin string) {
	const (
		clients = 2_000
		events  = 100
	)
	raiseFileLimit(t, clients+512)
	p := httpapitest.StartStatusd(t, bin, nil, "--max-clients", strconv.Itoa(clients))
	ps := newPoster(t, p)
	require.NoError(t, ps.update("warmup", 1, 0))
	rss0, _ := p.Memory()
	g0 := p.Metric("go_goroutines")

	streams := make([]*rawStream, clients)
	var dial sync.WaitGroup
	var dialErr atomic.Pointer[error]
	next := atomic.Int64{}
	for range 16 {
		dial.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= clients {
					return
				}
				path := "/events/projects?snapshot=false"
				if i%2 == 1 {
					path = "/events/projects/hot" // nothing broadcast yet: no snapshot
				}
				s, err := dialStream(p.Addr, path, 0)
				if err != nil {
					dialErr.CompareAndSwap(nil, &err)
					return
				}
				streams[i] = s
			}
		})
	}
	dial.Wait()
	defer func() {
		for _, s := range streams {
			if s != nil {
				_ = s.conn.Close()
			}
		}
	}()
	if e := dialErr.Load(); e != nil {
		require.NoError(t, *e)
	}
	require.Equal(t, float64(clients), p.Metric("statusbroadcaster_sse_open_streams"))
	time.Sleep(200 * time.Millisecond) // let the last handlers settle into waiting
	rss1, _ := p.Memory()
	g1 := p.Metric("go_goroutines")
	perStream := float64(rss1-rss0) / clients
	t.Logf("%d idle streams: statusd RSS %.1f MiB → %.1f MiB, %.1f KiB per stream; goroutines %v → %v (%.1f per stream)",
		clients, float64(rss0)/mib, float64(rss1)/mib, perStream/1024, g0, g1, (g1-g0)/clients)
	assert.Less(t, perStream, 64.0*1024, "memory per idle stream")

	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Pointer[error]
	for _, s := range streams {
		wg.Go(func() {
			_ = s.conn.SetReadDeadline(time.Now().Add(time.Minute))
			for v := 1; v <= events; v++ {
				id, got, err := s.nextData()
				if err == nil && (id != "hot" || got != v) {
					err = fmt.Errorf("got %s v%d, want hot v%d", id, got, v)
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	start := time.Now()
	for v := 1; v <= events; v++ {
		require.NoError(t, ps.update("hot", v, 200))
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		require.NoError(t, *e, "%d of %d clients failed", failures.Load(), clients)
	}
	t.Logf("%d events delivered to each of %d streams (%d frames) in %s",
		events, clients, events*clients, time.Since(start).Round(time.Millisecond))
}

// testSIGTERM: on SIGTERM every stream ends cleanly and statusd exits 0
// within 5 s, even with a client that stopped reading while the server was
// in the middle of a write to it (--write-timeout is far longer).
func testSIGTERM(t *testing.T, bin string) {
	const (
		clients = 200
		events  = 100
	)
	// No backstop: with a shutdown timeout this long, exiting within 5 s
	// shows that the streams themselves ended, the stalled one included.
	p := httpapitest.StartStatusd(t, bin, nil, "--write-timeout", "60s", "--shutdown-timeout", "30s")
	stalled, err := dialStream(p.Addr, "/events/projects/big", 4<<10)
	require.NoError(t, err)
	defer stalled.conn.Close()
	streams := make([]*rawStream, clients)
	for i := range streams {
		streams[i], err = dialStream(p.Addr, "/events?topic=projects:small&topic=projects:other", 0)
		require.NoError(t, err)
		defer streams[i].conn.Close()
	}
	// The readers read every event, then wait for the end of their stream.
	caughtUp := make(chan error, clients)
	ended := make(chan error, clients)
	for _, s := range streams {
		go func() {
			_ = s.conn.SetReadDeadline(time.Now().Add(time.Minute))
			for range events {
				if _, _, err := s.nextData(); err != nil {
					caughtUp <- err
					return
				}
			}
			caughtUp <- nil
			ended <- s.readAll()
		}()
	}
	ps := newPoster(t, p)
	for v := 1; v <= events; v++ {
		require.NoError(t, ps.update("small", v, 100))
	}
	for range clients {
		require.NoError(t, <-caughtUp)
	}
	// 8 MB for the stalled client, more than loopback socket buffers hold:
	// the server is blocked writing to it.
	for v := 1; v <= 250; v++ {
		require.NoError(t, ps.update("big", v, 32<<10))
	}
	time.Sleep(100 * time.Millisecond) // let the stream fill the socket

	start := time.Now()
	require.NoError(t, p.Stop(syscall.SIGTERM, 5*time.Second), "exit status 0")
	took := time.Since(start)
	assert.NotContains(t, p.Logs(), "unclean shutdown")
	clean := 0
	for range clients {
		if err := <-ended; err == nil {
			clean++
		} else {
			assert.NoError(t, err, "a stream must end cleanly (closing chunk), not be cut")
		}
	}
	assert.Equal(t, clients, clean)
	t.Logf("statusd exited 0 %s after SIGTERM (a write to the stalled client is cut after 1 s); %d of %d reading streams ended cleanly",
		took.Round(time.Millisecond), clean, clients)
}
