package httpapi_test

// The gateway's bounds against slow and hostile clients, as deployed:
// statusd is a child process (built without -race), clients talk to it
// over loopback, its memory is read from /proc/<pid>/status and, for the
// live heap, from the runtime's own GC trace (GODEBUG=gctrace=1).
//
// The scenarios are scaled down for `make test`; STATUSD_BOUNDS_FULL=1
// runs them at the sizes of BENCHMARKS.md. STATUSD_TEST_BIN runs them
// against a statusd built elsewhere (an older version, for the figures
// before). Settings are passed as STATUSD_* environment variables, which
// a statusd that does not know them ignores.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
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

// TestStatusdBounds runs each scenario against a fresh statusd, one after
// the other (they measure memory and latency).
func TestStatusdBounds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs statusd under load")
	}
	bin := os.Getenv("STATUSD_TEST_BIN")
	if bin == "" {
		bin = httpapitest.BuildStatusd(t)
	}
	full := os.Getenv("STATUSD_BOUNDS_FULL") != ""
	pick := func(small, big int) int {
		if full {
			return big
		}
		return small
	}
	t.Run("ProjectsListingIsStreamedAndCapped", func(t *testing.T) { testListingBounded(t, bin, pick(20_000, 100_000)) })
	t.Run("SlowSnapshotReadersStayUnderGOMEMLIMIT", func(t *testing.T) {
		testSlowSnapshots(t, bin, pick(5_000, 20_000), int64(pick(96, 256))*mib)
	})
	t.Run("ShutdownEndsMidSnapshotStreamsCleanly", func(t *testing.T) { testShutdownMidSnapshot(t, bin, pick(20_000, 100_000)) })
	t.Run("StalledCrowdDoesNotSlowAReader", func(t *testing.T) {
		testStalledCrowd(t, bin, pick(1_000, 1_000), pick(3_000, 20_000), pick(1024, 8192))
	})
	t.Run("MemoryPerCachedEvent", func(t *testing.T) {
		t.Run("1KiB", func(t *testing.T) { testMemoryPerEvent(t, bin, pick(20_000, 100_000), 800) })
		t.Run("64KiB", func(t *testing.T) { testMemoryPerEvent(t, bin, pick(300, 1_000), 64_000) })
	})
}

// loadProjects POSTs version v of projects p000000…p<n-1>, pad bytes of
// padding each, from 8 connections, and waits until the last is cached.
func loadProjects(t *testing.T, p *httpapitest.Statusd, n, v, pad int) {
	t.Helper()
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	const workers = 8
	for w := range workers {
		ps := newPoster(t, p)
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := ps.update(fmt.Sprintf("p%06d", i), v, pad); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		require.NoError(t, *e)
	}
	last := fmt.Sprintf("http://%s/projects/p%06d", p.Addr, n-1)
	require.Eventually(t, func() bool {
		resp, err := http.Get(last)
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), fmt.Sprintf(`"name":"v%06d"`, v))
	}, waitFor, 10*time.Millisecond)
}

// rawGet sends GET path on a new connection (a small receive buffer when
// readBuffer > 0) and reads the response head only.
func rawGet(addr, path string, readBuffer int) (*http.Response, net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	if readBuffer > 0 {
		_ = conn.(*net.TCPConn).SetReadBuffer(readBuffer)
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: statusd\r\n\r\n", path); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), nil)
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return resp, conn, nil
}

// readPaced reads r at about rate bytes per second until it ends or stop
// is closed; it returns nil when the stream ended cleanly (a chunked body
// with its closing chunk reads as io.EOF; a cut one fails).
func readPaced(r io.Reader, rate int, stop <-chan struct{}) error {
	const step = 4 << 10
	buf := make([]byte, step)
	next := time.Now()
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		n, err := r.Read(buf)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		next = next.Add(time.Duration(float64(n) / float64(rate) * float64(time.Second)))
		time.Sleep(time.Until(next))
	}
}

// 1. GET /projects with many projects and clients that never read: memory
// does not grow with the body; the fifth concurrent request gets 503; the
// non-readers are cut, so a reader then gets the whole array, by id.
func testListingBounded(t *testing.T, bin string, n int) {
	p := httpapitest.StartStatusd(t, bin, []string{"STATUSD_WRITE_TIMEOUT=2s", "STATUSD_MAX_PROJECTS=" + strconv.Itoa(n)})
	loadProjects(t, p, n, 1, 800) // ~950 bytes per record
	rssLoaded, peakLoaded := p.Memory()

	const stallers = 12
	var ok, refused int
	for range stallers {
		resp, conn, err := rawGet(p.Addr, "/projects", 4<<10)
		require.NoError(t, err)
		defer conn.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			ok++
		case http.StatusServiceUnavailable:
			refused++
			assert.NotEmpty(t, resp.Header.Get("Retry-After"))
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		default:
			t.Errorf("GET /projects: %s", resp.Status)
		}
	}
	time.Sleep(3 * time.Second) // the responses being written, their clients not reading
	rss, peak := p.Memory()
	grew := max(peak-max(peakLoaded, rssLoaded), 0)
	t.Logf("%d projects cached: RSS %.1f MiB; %d clients that never read GET /projects: %d served, %d refused; "+
		"RSS %.1f MiB, peak %.1f MiB (+%.1f MiB)", n, float64(rssLoaded)/mib, stallers, ok, refused,
		float64(rss)/mib, float64(peak)/mib, float64(grew)/mib)
	assert.LessOrEqual(t, ok, 4, "at most --max-listings (4) served at a time")
	assert.Less(t, grew, int64(48*mib), "memory per request bounded by a buffer, not by the number of projects")

	// The non-readers are cut (write deadline, minimum rate): a reader
	// gets the whole array, by id.
	var got []struct {
		ID string `json:"id"`
	}
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + p.Addr + "/projects")
		require.NoError(t, err)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		got = nil
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
		return true
	}, time.Minute, 250*time.Millisecond, "the stalled GET /projects were not cut")
	require.Len(t, got, n)
	assert.True(t, slices.IsSortedFunc(got, func(a, b struct {
		ID string `json:"id"`
	}) int {
		return strings.Compare(a.ID, b.ID)
	}), "by id")
}

// 2. Four groups of slow readers take the snapshot of every project while every
// project is updated between groups: what they hold is one chunk each, not
// the snapshot of their time, so statusd stays under GOMEMLIMIT.
func testSlowSnapshots(t *testing.T, bin string, n int, limit int64) {
	const (
		pad      = 4000      // ~4 KiB records
		slowRate = 256 << 10 // the readers' pace, well above --backlog-min-rate
	)
	p := httpapitest.StartStatusd(t, bin, []string{fmt.Sprintf("GOMEMLIMIT=%dMiB", limit/mib),
		"STATUSD_MAX_PROJECTS=" + strconv.Itoa(n), "STATUSD_HISTORY=1000", "STATUSD_WRITE_TIMEOUT=2s"})
	loadProjects(t, p, n, 1, pad)

	stop := make(chan struct{})
	var readers sync.WaitGroup
	var readerErr atomic.Pointer[error]
	defer func() { close(stop); readers.Wait() }()
	for group := 1; group <= 4; group++ {
		for range 4 {
			s, err := dialStream(p.Addr, "/events/projects", 64<<10)
			require.NoError(t, err)
			readers.Go(func() {
				defer s.conn.Close()
				if err := readPaced(s.body, slowRate, stop); err != nil {
					readerErr.CompareAndSwap(nil, &err)
				}
			})
		}
		time.Sleep(500 * time.Millisecond)
		loadProjects(t, p, n, group+1, pad) // a full update: every record replaced
	}
	time.Sleep(time.Second)
	rss, peak := p.Memory()
	t.Logf("%d projects of ~4 KiB, 4 groups of 4 readers at %d KiB/s taking the snapshot between full updates, GOMEMLIMIT %d MiB: "+
		"RSS %.1f MiB, peak %.1f MiB", n, slowRate>>10, limit/mib, float64(rss)/mib, float64(peak)/mib)
	// GOMEMLIMIT bounds the memory the Go runtime manages; RSS also
	// counts the binary's own pages (about 10 MiB).
	assert.Less(t, peak, limit+16*mib, "statusd stays under GOMEMLIMIT")
	if e := readerErr.Load(); e != nil {
		assert.NoError(t, *e, "a reader at %d KiB/s is not ended", slowRate>>10)
	}

}

// 3. SIGTERM while 20 readers are in the middle of a big snapshot and 3
// clients do not read their GET /projects: every stream ends with its
// closing chunk, statusd exits 0 within the shutdown budget, cleanly.
func testShutdownMidSnapshot(t *testing.T, bin string, n int) {
	p := httpapitest.StartStatusd(t, bin, []string{"STATUSD_MAX_PROJECTS=" + strconv.Itoa(n)})
	loadProjects(t, p, n, 1, 800)
	for range 3 {
		resp, conn, err := rawGet(p.Addr, "/projects", 4<<10)
		require.NoError(t, err)
		defer conn.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	const readers = 20
	fast := make(chan struct{})
	ended := make(chan error, readers)
	for range readers {
		s, err := dialStream(p.Addr, "/events/projects", 64<<10)
		require.NoError(t, err)
		defer s.conn.Close()
		go func() {
			_ = s.conn.SetReadDeadline(time.Now().Add(time.Minute))
			// 512 KiB/s until SIGTERM (so the snapshot is far from done),
			// then as fast as it comes.
			_ = readPaced(s.body, 512<<10, fast)
			ended <- s.readAll()
		}()
	}
	time.Sleep(time.Second)
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	close(fast)
	require.NoError(t, p.WaitExit(10*time.Second), "exit status 0")
	took := time.Since(start)
	clean := 0
	for range readers {
		if err := <-ended; err == nil {
			clean++
		}
	}
	t.Logf("SIGTERM with %d readers mid-snapshot (%d projects) and 3 GET /projects not read: exit 0 after %s; %d of %d streams ended cleanly",
		readers, n, took.Round(time.Millisecond), clean, readers)
	assert.Equal(t, readers, clean, "every stream ends with its closing chunk")
	assert.NotContains(t, p.Logs(), "unclean shutdown")
	assert.Less(t, took, 5*time.Second, "within the shutdown budget (4 s) and a second")
}

// 4. A reading client's latency with a crowd of stalled clients, against
// its latency alone, in the same run: no event lost, p99 within a small
// factor.
func testStalledCrowd(t *testing.T, bin string, stalled, events, queue int) {
	raiseFileLimit(t, uint64(stalled)+512)
	// --write-timeout 60s: the stalled clients stay for the whole run.
	p := httpapitest.StartStatusd(t, bin, []string{"STATUSD_CLIENT_QUEUE=" + strconv.Itoa(queue), "STATUSD_MAX_CLIENTS=" + strconv.Itoa(stalled+16),
		"STATUSD_WRITE_TIMEOUT=60s"})
	// measure posts events versions from `from` on, and returns the
	// reader's latency percentiles (POST sent → event read) and how many
	// events it did not get (or got out of order).
	measure := func(from int) (p50, p99 time.Duration, lost int) {
		reader, err := dialStream(p.Addr, "/events/projects?snapshot=false", 0)
		require.NoError(t, err)
		defer reader.conn.Close()
		sent := make([]atomic.Int64, events)
		got := make(chan error, 1)
		lat := make([]time.Duration, 0, events)
		go func() {
			_ = reader.conn.SetReadDeadline(time.Now().Add(3 * time.Minute))
			next := from
			for next < from+events {
				_, v, err := reader.nextData()
				if err != nil {
					got <- err
					return
				}
				if v < next || v >= from+events {
					got <- fmt.Errorf("got v%d after v%d: out of order", v, next-1)
					return
				}
				lost += v - next
				next = v + 1
				lat = append(lat, time.Duration(time.Now().UnixNano()-sent[v-from].Load()))
			}
			got <- nil
		}()
		ps := newPoster(t, p)
		for i := range events {
			sent[i].Store(time.Now().UnixNano())
			require.NoError(t, ps.update(fmt.Sprintf("p%03d", i%100), from+i, 800))
		}
		require.NoError(t, <-got, "the reader reads in order up to the last event")
		slices.Sort(lat)
		return lat[len(lat)/2], lat[len(lat)*99/100], lost
	}
	alone50, alone99, aloneLost := measure(1)

	conns := make([]net.Conn, 0, stalled)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range stalled {
		s, err := dialStream(p.Addr, "/events/projects?snapshot=false", 4<<10)
		require.NoError(t, err)
		conns = append(conns, s.conn)
	}
	// Stall them: enough events to fill their sockets and their queues.
	// (Until its socket is full a client that does not read still takes
	// writes — up to 2 × StreamSendBuffer — and costs a write per event.)
	warm := newPoster(t, p)
	stallIn := time.Now()
	for i := range queue + 500 {
		require.NoError(t, warm.update(fmt.Sprintf("w%03d", i%100), i+1, 800))
	}
	lastWarm := queue + 500 - 1
	settled := fmt.Sprintf("http://%s/projects/w%03d", p.Addr, lastWarm%100)
	require.Eventually(t, func() bool { // every warm-up event dispatched
		resp, err := http.Get(settled)
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return strings.Contains(string(body), fmt.Sprintf(`"name":"v%06d"`, lastWarm+1))
	}, time.Minute, 10*time.Millisecond)
	t.Logf("stalling %d clients took %s (%d events)", stalled, time.Since(stallIn).Round(time.Millisecond), queue+500)
	time.Sleep(time.Second)
	crowd50, crowd99, crowdLost := measure(events + 1)
	ratio := float64(crowd99) / float64(alone99)
	t.Logf("%d events of ~1 KiB, --client-queue %d: a reader alone p50 %s p99 %s, %d lost; with %d stalled clients p50 %s p99 %s (p99 ×%.2f), %d lost",
		events, queue, alone50.Round(100*time.Microsecond), alone99.Round(100*time.Microsecond), aloneLost, stalled,
		crowd50.Round(100*time.Microsecond), crowd99.Round(100*time.Microsecond), ratio, crowdLost)
	assert.Zero(t, aloneLost+crowdLost, "no event lost to the reader")
	// The target is 2×; the margin absorbs a loaded machine (the figure
	// was 150× before parking).
	assert.Less(t, crowd99, 4*alone99+20*time.Millisecond, "p99 with a stalled crowd")
}

var gcTrace = regexp.MustCompile(`gc (\d+) @[^\n]*?(\d+)->(\d+)->(\d+) MB`)

// liveHeap returns the live heap after the last completed GC, from the
// runtime's GC trace, and the number of that GC.
func liveHeap(t *testing.T, p *httpapitest.Statusd) (int64, int) {
	t.Helper()
	all := gcTrace.FindAllStringSubmatch(p.Logs(), -1)
	if len(all) == 0 {
		return 0, 0
	}
	last := all[len(all)-1]
	n, err := strconv.Atoi(last[1])
	require.NoError(t, err)
	mb, err := strconv.ParseInt(last[4], 10, 64)
	require.NoError(t, err)
	return mb * mib, n
}

// freshLiveHeap makes the server allocate (POSTs of one project, which
// leave the cache as it is) until two more GCs completed, and returns the
// live heap after the last.
func freshLiveHeap(t *testing.T, p *httpapitest.Statusd) int64 {
	t.Helper()
	_, n0 := liveHeap(t, p)
	ps := newPoster(t, p)
	deadline := time.Now().Add(time.Minute)
	for v := 1; ; v++ {
		if _, n := liveHeap(t, p); n >= n0+2 {
			break
		}
		require.True(t, time.Now().Before(deadline), "no GC within a minute")
		require.NoError(t, ps.update("churn", v, 100))
	}
	heap, _ := liveHeap(t, p)
	return heap
}

// 5. The real cost of a cached event: live heap and RSS per event, for
// records of ~1 KiB and ~64 KiB, against their JSON size.
func testMemoryPerEvent(t *testing.T, bin string, n, pad int) {
	p := httpapitest.StartStatusd(t, bin, []string{"GODEBUG=gctrace=1", "STATUSD_MAX_PROJECTS=" + strconv.Itoa(n+1), "STATUSD_HISTORY=1000"})
	heap0 := freshLiveHeap(t, p)
	rss0, _ := p.Memory()
	loadProjects(t, p, n, 1, pad)
	heap1 := freshLiveHeap(t, p)
	rss1, peak := p.Memory()
	size := len(fmt.Sprintf(`{"event":"project_updated","project":{"id":"p000000","name":"v000001","status":"compiling","code_repo":"https://github.com/example/p000000?%s","docs_repo":"https://github.com/example/docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"}}`, strings.Repeat("x", pad)))
	heapPer := float64(heap1-heap0) / float64(n)
	rssPer := float64(rss1-rss0) / float64(n)
	t.Logf("%d events of %d bytes of JSON cached: live heap %.1f → %.1f MiB (%.0f bytes per event, ×%.2f its JSON); "+
		"RSS %.1f → %.1f MiB (%.0f bytes per event, ×%.2f), peak %.1f MiB",
		n, size, float64(heap0)/mib, float64(heap1)/mib, heapPer, heapPer/float64(size),
		float64(rss0)/mib, float64(rss1)/mib, rssPer, rssPer/float64(size), float64(peak)/mib)
	// The event's JSON, its entry, its share of the cache's index, and
	// size-class rounding; the decoded copy it used to keep is gone (×2
	// and more before). The GC trace has 1 MB steps: margins for the
	// small scaled-down runs.
	assert.Less(t, heapPer, 1.45*float64(size)+300, "live heap per cached event")
}
