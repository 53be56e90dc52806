package httpapi_test

// Fault tests against statusd as a child process (built without the race
// detector, so its memory and goroutines are measurable): clients that
// vanish mid-stream, SIGTERM under load, slowloris and oversized headers,
// and the hardening flags as statusd wires them.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
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

// TestStatusdFaults builds statusd once and runs each scenario against a
// fresh process of it, one after the other (they measure memory).
func TestStatusdFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs statusd under faults")
	}
	bin := httpapitest.BuildStatusd(t)
	t.Run("VanishingClientsLeaveNothingBehind", func(t *testing.T) { testVanishingClients(t, bin) })
	t.Run("SIGTERMDuringStreamsAndPostLoad", func(t *testing.T) { testSIGTERMUnderLoad(t, bin) })
	t.Run("SlowlorisAndOversizedHeaders", func(t *testing.T) { testSlowloris(t, bin) })
	t.Run("HardeningFlags", func(t *testing.T) { testHardeningFlags(t, bin) })
}

// reset closes conn with a TCP reset (SO_LINGER 0): the client vanishes
// without the orderly FIN of a close.
func reset(conn net.Conn) {
	_ = conn.(*net.TCPConn).SetLinger(0)
	_ = conn.Close()
}

// dialMany opens n streams on path with 16 dialers.
func dialMany(t *testing.T, addr, path string, n int) []*rawStream {
	t.Helper()
	streams := make([]*rawStream, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	var firstErr atomic.Pointer[error]
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				s, err := dialStream(addr, path, 0)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				streams[i] = s
			}
		})
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		for _, s := range streams {
			if s != nil {
				reset(s.conn)
			}
		}
		require.NoError(t, *e)
	}
	return streams
}

// testVanishingClients: 10,000 clients, in waves of 1,000 open at once,
// connect, get events, and vanish with a TCP reset mid-stream — half after
// reading an event, half without reading while the server writes to them.
// statusd's goroutines return to the baseline and its memory near it.
func testVanishingClients(t *testing.T, bin string) {
	const (
		waves   = 10
		perWave = 1_000
		events  = 5
	)
	raiseFileLimit(t, perWave+512)
	p := httpapitest.StartStatusd(t, bin, nil)
	ps := newPoster(t, p)
	require.NoError(t, ps.update("warm", 1, 0))
	// A first wave warms up what a wave needs (pools, buffers, maps), so
	// that the baseline is a server that has served, not a fresh one.
	for _, s := range dialMany(t, p.Addr, "/events/projects/vanish?snapshot=false", perWave) {
		reset(s.conn)
	}
	waitMetric(t, p, "statusbroadcaster_sse_open_streams", 0)
	time.Sleep(500 * time.Millisecond)
	rss0, _ := p.Memory()
	g0 := p.Metric("go_goroutines")
	heap0, stack0 := p.Metric("go_memstats_heap_inuse_bytes"), p.Metric("go_memstats_stack_inuse_bytes")

	start := time.Now()
	v := 0
	for w := range waves {
		streams := dialMany(t, p.Addr, "/events/projects/vanish?snapshot=false", perWave)
		require.Equal(t, float64(perWave), p.Metric("statusbroadcaster_sse_open_streams"), "wave %d", w)
		for range events {
			v++
			require.NoError(t, ps.update("vanish", v, 1000))
		}
		var wg sync.WaitGroup
		for i, s := range streams {
			wg.Go(func() {
				if i%2 == 0 {
					_ = s.conn.SetReadDeadline(time.Now().Add(waitFor))
					_, _, _ = s.nextData() // one event, then gone mid-stream
				}
				reset(s.conn)
			})
		}
		wg.Wait()
		waitMetric(t, p, "statusbroadcaster_sse_open_streams", 0)
	}
	took := time.Since(start)
	_, peak := p.Memory()

	// Goroutines: back to the baseline (a few of net/http's may linger
	// for a moment).
	var g1 float64
	require.Eventually(t, func() bool { g1 = p.Metric("go_goroutines"); return g1 <= g0+2 }, waitFor, 50*time.Millisecond,
		"goroutines: %v at the baseline, %v after the clients vanished", g0, g1)
	waitMetric(t, p, "statusbroadcaster_subscriptions", 0)
	// Memory: back near the baseline. The Go runtime keeps freed heap for
	// reuse (up to about its heap goal) and returns the rest to the OS
	// gradually, so RSS is not expected to fall to the byte: it stays near
	// the peak of one wave of 1,000 live streams (measured 21–33 MiB over
	// the baseline). A vanished client that left behind 5 KiB would add
	// 48 MiB here; a stream holds far more while it lives (a goroutine
	// stack, its connection's buffers, its queue), and goroutines and
	// subscriptions are checked exactly above.
	const slack = 48 * mib
	var rss1 int64
	deadline := time.Now().Add(15 * time.Second)
	for {
		rss1, _ = p.Memory()
		if rss1 <= rss0+slack || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	heap1, stack1 := p.Metric("go_memstats_heap_inuse_bytes"), p.Metric("go_memstats_stack_inuse_bytes")
	t.Logf("%d clients in %d waves of %d vanished (reset) mid-stream in %s: goroutines %v → %v; RSS %.1f MiB → %.1f MiB (peak %.1f MiB); "+
		"Go heap in use %.1f MiB → %.1f MiB, stacks %.1f MiB → %.1f MiB",
		waves*perWave, waves, perWave, took.Round(time.Millisecond), g0, g1, float64(rss0)/mib, float64(rss1)/mib, float64(peak)/mib,
		heap0/mib, heap1/mib, stack0/mib, stack1/mib)
	assert.LessOrEqual(t, rss1, rss0+slack, "RSS back near the baseline")
	// The server is still serving.
	s, err := dialStream(p.Addr, "/events/projects/vanish", 0)
	require.NoError(t, err)
	defer s.conn.Close()
	_ = s.conn.SetReadDeadline(time.Now().Add(waitFor))
	id, got, err := s.nextData()
	require.NoError(t, err)
	assert.Equal(t, "vanish", id)
	assert.Equal(t, v, got, "the snapshot is the latest event")
}

// waitMetric waits until an unlabelled metric of statusd has value v.
func waitMetric(t *testing.T, p *httpapitest.Statusd, name string, v float64) {
	t.Helper()
	var got float64
	require.Eventually(t, func() bool { got = p.Metric(name); return got == v }, waitFor, 20*time.Millisecond,
		"%s: %v, want %v", name, got, v)
}

// testSIGTERMUnderLoad: SIGTERM while 2,000 streams read and four clients
// POST as fast as they can: statusd exits 0 within 5 s, without a panic,
// and every stream ends cleanly.
func testSIGTERMUnderLoad(t *testing.T, bin string) {
	const (
		clients = 2_000
		posters = 4
	)
	raiseFileLimit(t, clients+512)
	p := httpapitest.StartStatusd(t, bin, nil, "--max-clients", strconv.Itoa(clients))
	streams := dialMany(t, p.Addr, "/events/projects?snapshot=false", clients)
	defer func() {
		for _, s := range streams {
			_ = s.conn.Close()
		}
	}()

	var received atomic.Int64
	ended := make(chan error, clients)
	for _, s := range streams {
		go func() {
			_ = s.conn.SetReadDeadline(time.Now().Add(time.Minute))
			for {
				_, _, err := s.nextData()
				if err != nil {
					if err == io.EOF {
						err = nil // the closing chunk: a clean end
					}
					ended <- err
					return
				}
				received.Add(1)
			}
		}()
	}
	stop := make(chan struct{})
	var accepted atomic.Int64
	var pw sync.WaitGroup
	for w := range posters {
		ps := newPoster(t, p)
		pw.Go(func() {
			for v := 1; ; v++ {
				select {
				case <-stop:
					return
				default:
				}
				if ps.update(fmt.Sprintf("load-%d", w), v, 200) != nil {
					return // statusd went away
				}
				accepted.Add(1)
			}
		})
	}
	require.Eventually(t, func() bool { return received.Load() >= 20*clients }, waitFor, 10*time.Millisecond, "the streams receive the load")

	start := time.Now()
	require.NoError(t, p.Stop(syscall.SIGTERM, 5*time.Second), "exit status 0")
	took := time.Since(start)
	close(stop)
	pw.Wait()
	logs := p.Logs()
	assert.NotContains(t, logs, "panic")
	assert.NotContains(t, logs, "goroutine ")
	clean := 0
	for range clients {
		select {
		case err := <-ended:
			if assert.NoError(t, err, "a stream must end cleanly (closing chunk)") {
				clean++
			}
		case <-time.After(waitFor):
			require.FailNow(t, "a stream did not end")
		}
	}
	t.Logf("SIGTERM during %d streams and %d posters (%d POSTs accepted, %d frames received): exit 0 after %s; %d streams ended cleanly",
		clients, posters, accepted.Load(), received.Load(), took.Round(time.Millisecond), clean)
}

// testSlowloris: clients that dribble their header, or their body, one
// byte at a time, are cut when their deadline passes; meanwhile a stream
// and a poster are served as usual. A header over 16 KiB gets 431.
func testSlowloris(t *testing.T, bin string) {
	const (
		timeout   = 2 * time.Second
		dribblers = 50
	)
	p := httpapitest.StartStatusd(t, bin, nil, "--read-header-timeout", timeout.String(), "--read-body-timeout", timeout.String())
	s, err := dialStream(p.Addr, "/events/projects/steady?snapshot=false", 0)
	require.NoError(t, err)
	defer s.conn.Close()

	type result struct {
		kind string
		took time.Duration
	}
	cut := make(chan result, 2*dribblers)
	var wg sync.WaitGroup
	for i := range 2 * dribblers {
		kind, head, rest := "header", "GET /events/projects HTTP/1.1\r\nHost: x\r\n", strings.Repeat("X-Slow: 1\r\n", 100)
		if i%2 == 1 {
			body := envelope("slow", i, "")
			kind = "body"
			head = fmt.Sprintf("POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
			rest = body
		}
		conn, err := net.Dial("tcp", p.Addr)
		require.NoError(t, err)
		defer conn.Close()
		start := time.Now()
		_, err = io.WriteString(conn, head)
		require.NoError(t, err)
		wg.Go(func() { dribble(conn, []byte(rest), 100*time.Millisecond) })
		wg.Go(func() {
			_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
			_, _ = io.Copy(io.Discard, conn) // until statusd closes the connection
			cut <- result{kind, time.Since(start)}
		})
	}

	// Meanwhile: POSTs are answered and streamed at once.
	ps := newPoster(t, p)
	var slowest time.Duration
	for v := 1; v <= 20; v++ {
		start := time.Now()
		require.NoError(t, ps.update("steady", v, 100))
		_ = s.conn.SetReadDeadline(time.Now().Add(waitFor))
		id, got, err := s.nextData()
		require.NoError(t, err)
		require.Equal(t, "steady", id)
		require.Equal(t, v, got)
		slowest = max(slowest, time.Since(start))
		time.Sleep(50 * time.Millisecond)
	}
	worst := map[string]time.Duration{}
	for range 2 * dribblers {
		select {
		case r := <-cut:
			assert.GreaterOrEqual(t, r.took, timeout-100*time.Millisecond, "%s dribbler cut before its deadline", r.kind)
			assert.Less(t, r.took, timeout+3*time.Second, "%s dribbler cut at its deadline (generous on a loaded machine)", r.kind)
			worst[r.kind] = max(worst[r.kind], r.took)
		case <-time.After(waitFor):
			require.FailNow(t, "a dribbler was never cut")
		}
	}
	wg.Wait()
	assert.Less(t, slowest, timeout/2, "a POST and its delivery never wait for the dribblers (typically a few ms)")
	t.Logf("%d header and %d body dribblers, deadline %s: cut after at most %s (header) and %s (body); "+
		"meanwhile the slowest POST-to-stream round trip took %s",
		dribblers, dribblers, timeout, worst["header"].Round(time.Millisecond), worst["body"].Round(time.Millisecond), slowest.Round(time.Millisecond))

	// Oversized headers: 431; just under the limit is fine. (net/http
	// reads 4 KiB past MaxHeaderBytes before it refuses, and on a
	// keep-alive connection 4 KiB more: each request here has its own.)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(size int) *http.Response {
		req, err := http.NewRequest(http.MethodGet, "http://"+p.Addr+"/healthz", nil)
		require.NoError(t, err)
		req.Header.Set("X-Big", strings.Repeat("b", size))
		resp, err := client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}
	assert.Equal(t, http.StatusOK, get(15<<10).StatusCode, "15 KiB of header")
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, get(21<<10).StatusCode, "21 KiB of header")
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, get(1<<20).StatusCode, "1 MiB of header")
}

// testHardeningFlags: the flags reach the server (each behaviour has its
// own detailed test in harden_test.go).
func testHardeningFlags(t *testing.T, bin string) {
	p := httpapitest.StartStatusd(t, bin, nil, "--cors-origins", "https://status.example.com", "--max-clients-per-ip", "1",
		"--publish-rate", "0.2", "--publish-burst", "2", "--trusted-proxies", "127.0.0.1/32")
	base := "http://" + p.Addr

	req, _ := http.NewRequest(http.MethodOptions, base+"/events", nil)
	req.Header.Set("Origin", "https://status.example.com")
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, "https://status.example.com", resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))

	s, err := dialStream(p.Addr, "/events/projects", 0)
	require.NoError(t, err)
	defer s.conn.Close()
	_, err = dialStream(p.Addr, "/events/projects", 0)
	require.ErrorContains(t, err, "429")

	ps := newPoster(t, p)
	require.NoError(t, ps.update("flags", 1, 0))
	require.NoError(t, ps.update("flags", 2, 0))
	require.ErrorContains(t, ps.update("flags", 3, 0), "429")

	// A client behind the trusted proxy has a bucket of its own.
	body := `{"event":"project_updated","project":{"id":"flags","name":"x","status":"ready"}}`
	req, _ = http.NewRequest(http.MethodPost, base+"/events", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Forwarded-For", "203.0.113.1")
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusAccepted, resp.StatusCode)

	// Rejected flags.
	for _, args := range [][]string{
		{"--cors-origins", "*"}, {"--trusted-proxies", "10.0.0.0/99"}, {"--publish-rate", "-1"}, {"--max-clients-per-ip", "-1"},
	} {
		out, err := runStatusd(bin, args...)
		assert.Error(t, err, "%v: %s", args, out)
	}
}

// runStatusd runs statusd with args that must make it refuse to start.
func runStatusd(bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--addr", "127.0.0.1:0"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
