package main

// The side-by-side comparison (--compare): statusd and, when it is
// installed, Centrifugo v6 as a second baseline, in the same run, through
// the same scenarios, the systems alternating, each run on a freshly
// started server. And the idle-memory probe (--idle): RSS per idle stream
// over HTTP/1.1, or over h2c with many streams per connection.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// server is one system under test, started fresh for each run.
type server struct {
	name string
	base string
	pid  int
	stop func()
	// streamURL is the SSE URL of project id, or of every project for "".
	streamURL func(id string) string
	// body is what to POST to publishURL for an envelope about project id.
	publishURL string
	body       func(id string, envelope []byte) []byte
	// readyOnData: the stream is subscribed once its first data line
	// arrives (Centrifugo's connect reply), not when the headers do.
	readyOnData bool
}

func startStatusdServer(ctx context.Context, bin string, extra ...string) (*server, error) {
	base, pid, stop, err := startStatusdArgs(ctx, bin, extra...)
	if err != nil {
		return nil, err
	}
	return &server{
		name: "statusd", base: base, pid: pid, stop: stop,
		streamURL: func(id string) string {
			if id == "" {
				return base + "/events/projects?snapshot=false"
			}
			return base + "/events/projects/" + id + "?snapshot=false"
		},
		publishURL: base + "/events",
		body:       func(_ string, envelope []byte) []byte { return envelope },
	}, nil
}

// centrifugoConfig is a Centrifugo v6 configuration that serves
// anonymous uni_sse subscribers of the projects namespace and an
// unauthenticated HTTP API on loopback.
const centrifugoConfig = `{
  "http_server": {"address": "127.0.0.1", "port": %d},
  "log": {"level": "error"},
  "client": {"allow_anonymous_connect_without_token": true, "allowed_origins": ["*"]},
  "channel": {"namespaces": [{"name": "projects", "allow_subscribe_for_client": true, "allow_subscribe_for_anonymous": true}]},
  "http_api": {"insecure": true},
  "uni_sse": {"enabled": true}
}`

func startCentrifugo(ctx context.Context, bin string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "statusload-centrifugo")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, centrifugoConfig, port), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Dir = dir
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = os.RemoveAll(dir)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Post(base+"/api/info", "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			stop()
			return nil, fmt.Errorf("centrifugo did not answer on %s: %v\n%s", base, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &server{
		name: "centrifugo", base: base, pid: cmd.Process.Pid, stop: stop,
		streamURL: func(id string) string {
			ch := "projects:all"
			if id != "" {
				ch = "projects:" + id
			}
			return base + "/connection/uni_sse?cf_connect=" + url.QueryEscape(`{"subs":{"`+ch+`":{}}}`)
		},
		publishURL: base + "/api/broadcast",
		body: func(id string, envelope []byte) []byte {
			return fmt.Appendf(nil, `{"channels":["projects:%s","projects:all"],"data":%s}`, id, envelope)
		},
		readyOnData: true,
	}, nil
}

// scenario is one row of the comparison.
type scenario struct {
	name     string
	clients  int  // readers
	wildcard bool // readers select every project (else reader i selects project i)
	stalled  int  // clients that never read
	events   int
	projects int
	posters  int
	payload  int
	rate     int // events per second over all posters; 0: as fast as they can
}

// outcome is one run of a scenario on one system.
type outcome struct {
	rate     float64       // deliveries per second
	p50, p99 time.Duration // POST → received
	cpu      time.Duration // server CPU per delivery
	rss      int64         // server RSS with the readers idle, minus at start
	missing  int64
	disorder int64
	sched    histogram // statusd's goroutine scheduling latencies during the run
	gc       histogram // statusd's GC stop-the-world pauses during the run
}

// sseClient reads one stream and checks sequence numbers per project.
type sseClient struct {
	received  atomic.Int64
	mu        sync.Mutex
	next      map[string]int
	disorder  int64
	latencies []time.Duration
}

func (c *sseClient) run(ctx context.Context, client *http.Client, u string, readyOnData bool, ready func(error), opening chan struct{}) {
	var resp *http.Response
	var err error
	opening <- struct{}{}
	for attempt := 1; attempt <= 3; attempt++ { // a burst of connections may overflow a listen backlog
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err = client.Do(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = fmt.Errorf("GET %s: %s", u, resp.Status)
		}
		if err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt) * 100 * time.Millisecond)
	}
	<-opening
	if err != nil {
		ready(err)
		return
	}
	defer resp.Body.Close()
	if !readyOnData {
		ready(nil)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		if readyOnData {
			readyOnData = false
			ready(nil)
		}
		id, seqText, at := field(data, `"id":"`), field(data, `"name":"seq-`), field(data, `"updated_at":"`)
		seq, err := strconv.Atoi(seqText)
		sent, err2 := time.Parse(time.RFC3339Nano, at)
		if err != nil || err2 != nil {
			continue
		}
		lat := time.Since(sent)
		c.mu.Lock()
		if seq < c.next[id] {
			c.disorder++
		}
		c.next[id] = seq + 1
		c.latencies = append(c.latencies, lat)
		c.mu.Unlock()
		c.received.Add(1)
	}
}

// runScenario runs sc once against srv.
func runScenario(ctx context.Context, srv *server, sc scenario) (outcome, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var o outcome
	baseRSS := procStatus(srv.pid, "VmRSS:")
	tr := &http.Transport{MaxIdleConnsPerHost: sc.posters * 2, MaxConnsPerHost: 0}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	for range sc.stalled {
		conn, err := stallConn(srv.streamURL(""))
		if err != nil {
			return o, err
		}
		defer conn.Close()
	}
	clients := make([]*sseClient, sc.clients)
	want := make([]int64, sc.clients)
	errs := make(chan error, sc.clients)
	var ready sync.WaitGroup
	opening := make(chan struct{}, 100) // connections being opened at once
	for i := range clients {
		id := ""
		want[i] = int64(sc.events)
		if !sc.wildcard {
			id = projectID(i % sc.projects)
			want[i] = int64(eventsOf(i%sc.projects, options{events: sc.events, projects: sc.projects}))
		}
		clients[i] = &sseClient{next: map[string]int{}}
		ready.Add(1)
		var once sync.Once
		go clients[i].run(ctx, client, srv.streamURL(id), srv.readyOnData, func(err error) {
			once.Do(func() {
				if err != nil {
					errs <- err
				}
				ready.Done()
			})
		}, opening)
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	select {
	case <-allReady:
	case <-time.After(2 * time.Minute):
		cancel() // the clients give up; ready.Wait ends
		<-allReady
		return o, errors.New("opening streams: not all subscribed within 2 minutes")
	}
	select {
	case err := <-errs:
		return o, fmt.Errorf("opening streams: %w", err)
	default:
	}
	time.Sleep(200 * time.Millisecond) // let the subscriptions settle
	o.rss = procStatus(srv.pid, "VmRSS:") - baseRSS
	cpu0 := procCPU(srv.pid)
	sched0, gc0 := readHistogram(srv.base, "go_sched_latencies_seconds"), readHistogram(srv.base, "go_sched_pauses_total_gc_seconds")

	start := time.Now()
	if err := publish(ctx, client, srv, sc); err != nil {
		return o, err
	}
	// Wait until every client has what it selected, or until deliveries
	// stop for 10 s (a system that dropped or disconnected clients: the
	// shortfall is reported as missing).
	var total int64
	last, lastAt := int64(-1), time.Now()
	for ctx.Err() == nil {
		var got int64
		done := true
		for i, c := range clients {
			n := c.received.Load()
			got += n
			done = done && n >= want[i]
		}
		if done {
			break
		}
		if got != last {
			last, lastAt = got, time.Now()
		} else if time.Since(lastAt) > 10*time.Second {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if last >= 0 && time.Since(lastAt) > 10*time.Second {
		elapsed = lastAt.Sub(start) // up to the last delivery
	}
	cpu := procCPU(srv.pid) - cpu0
	o.sched = readHistogram(srv.base, "go_sched_latencies_seconds").minus(sched0)
	o.gc = readHistogram(srv.base, "go_sched_pauses_total_gc_seconds").minus(gc0)
	cancel()

	var lat []time.Duration
	for i, c := range clients {
		c.mu.Lock()
		lat = append(lat, c.latencies...)
		o.disorder += c.disorder
		c.mu.Unlock()
		got := c.received.Load()
		total += got
		o.missing += max(0, want[i]-got)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	o.p50, o.p99 = pct(0.50), pct(0.99)
	o.rate = float64(total) / elapsed.Seconds()
	if total > 0 {
		o.cpu = cpu / time.Duration(total)
	}
	return o, nil
}

// publish POSTs sc.events envelopes: event i is about project i %
// sc.projects; each poster owns the projects p with p % posters == its
// index, so each project's events are posted in order.
func publish(ctx context.Context, client *http.Client, srv *server, sc scenario) error {
	pad := strings.Repeat("x", max(0, sc.payload-300))
	var wg sync.WaitGroup
	errs := make(chan error, sc.posters)
	start := time.Now()
	for w := range sc.posters {
		wg.Go(func() {
			for i := 0; i < sc.events; i++ {
				p := i % sc.projects
				if p%sc.posters != w {
					continue
				}
				if sc.rate > 0 { // event i is due at i/rate seconds
					time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(sc.rate))))
				}
				id := projectID(p)
				if err := postJSON(ctx, client, srv.publishURL, srv.body(id, envelope(id, i, pad)), 0); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// stallConn asks for a stream and never reads a byte.
func stallConn(u string) (net.Conn, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	conn, err := net.Dial("tcp", pu.Host)
	if err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", pu.RequestURI(), pu.Host); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// procCPU is the user+system CPU time of pid so far.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// compareOptions configures --compare.
type compareOptions struct {
	statusd    string
	centrifugo string // "" when absent
	only       string // run only the scenarios whose name contains it
	quick      bool
	repeat     int
	payload    int
	timeout    time.Duration
}

func scenarios(quick bool, payload int) []scenario {
	if quick {
		return []scenario{
			{name: "ORDER 1 client", clients: 1, events: 2000, projects: 1, posters: 1, payload: payload},
			{name: "ORDER 200 ev/s", clients: 1, events: 1000, projects: 1, posters: 1, payload: payload, rate: 200},
			{name: "FILTERED N=1000", clients: 1000, events: 3000, projects: 1000, posters: 4, payload: payload},
			{name: "FANOUT N=1000", clients: 1000, wildcard: true, events: 100, projects: 20, posters: 4, payload: payload},
			{name: "FANOUT N=1000 50/s", clients: 1000, wildcard: true, events: 100, projects: 20, posters: 4, payload: payload, rate: 50},
			{name: "STALLED 1 + 100", clients: 100, wildcard: true, stalled: 1, events: 2000, projects: 20, posters: 4, payload: payload},
		}
	}
	return []scenario{
		{name: "ORDER 1 client", clients: 1, events: 10_000, projects: 1, posters: 1, payload: payload},
		{name: "ORDER 200 ev/s", clients: 1, events: 4000, projects: 1, posters: 1, payload: payload, rate: 200},
		{name: "FILTERED N=1000", clients: 1000, events: 10_000, projects: 1000, posters: 4, payload: payload},
		{name: "FILTERED N=5000", clients: 5000, events: 10_000, projects: 5000, posters: 4, payload: payload},
		{name: "FANOUT N=1000", clients: 1000, wildcard: true, events: 300, projects: 20, posters: 4, payload: payload},
		{name: "FANOUT N=5000", clients: 5000, wildcard: true, events: 150, projects: 20, posters: 4, payload: payload},
		// The same at a pace both systems keep up with (50,000 deliveries/s,
		// under half of either one's maximum here): latency without a queue.
		{name: "FANOUT N=1000 50/s", clients: 1000, wildcard: true, events: 300, projects: 20, posters: 4, payload: payload, rate: 50},
		{name: "FANOUT N=5000 10/s", clients: 5000, wildcard: true, events: 100, projects: 20, posters: 4, payload: payload, rate: 10},
		{name: "STALLED 1 + 100", clients: 100, wildcard: true, stalled: 1, events: 10_000, projects: 20, posters: 4, payload: payload},
	}
}

// findCentrifugo returns the centrifugo binary on PATH or in
// $GOPATH/bin, or "".
func findCentrifugo() string {
	if p, err := exec.LookPath("centrifugo"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "centrifugo")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// compare runs every scenario co.repeat times on each system, alternating
// the systems, and prints medians with min–max.
func compare(co compareOptions, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), co.timeout)
	defer cancel()
	type system struct {
		name  string
		start func() (*server, error)
	}
	systems := []system{{"statusd", func() (*server, error) { return startStatusdServer(ctx, co.statusd) }}}
	if co.centrifugo != "" {
		systems = append(systems, system{"centrifugo", func() (*server, error) { return startCentrifugo(ctx, co.centrifugo) }})
		fmt.Fprintf(out, "systems: statusd (%s) and centrifugo (%s), alternating, %d run(s) each, a fresh server per run\n", co.statusd, co.centrifugo, co.repeat)
	} else {
		fmt.Fprintf(out, "systems: statusd only (%s): centrifugo not found (go install github.com/centrifugal/centrifugo/v6@v6.9.1, or --centrifugo PATH)\n", co.statusd)
	}
	fmt.Fprintf(out, "%-18s %-10s %-24s %-22s %-22s %-20s %-14s %s\n", "scenario", "system", "deliveries/s", "p50 ms", "p99 ms", "CPU µs/delivery", "idle RSS KiB/stream", "missing/disorder")
	for _, sc := range scenarios(co.quick, co.payload) {
		if !strings.Contains(sc.name, co.only) {
			continue
		}
		results := make([][]outcome, len(systems))
		for r := range co.repeat {
			for k := range systems {
				s := systems[(k+r)%len(systems)]
				idx := slices.IndexFunc(systems, func(x system) bool { return x.name == s.name })
				srv, err := s.start()
				if err != nil {
					return fmt.Errorf("%s: %w", s.name, err)
				}
				o, err := runScenario(ctx, srv, sc)
				srv.stop()
				if err != nil { // reported, and the run left out of the figures
					fmt.Fprintf(out, "%-18s %-10s run %d failed: %v\n", sc.name, s.name, r+1, err)
					continue
				}
				results[idx] = append(results[idx], o)
			}
		}
		for k, s := range systems {
			rs := results[k]
			var miss, dis int64
			for _, o := range rs {
				miss += o.missing
				dis += o.disorder
			}
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			us := func(d time.Duration) float64 { return float64(d) / 1e3 }
			kib := func(b int64) float64 { return float64(b) / 1024 / float64(max(1, sc.clients+sc.stalled)) }
			fmt.Fprintf(out, "%-18s %-10s %-24s %-22s %-22s %-20s %-14s %d/%d\n", sc.name, s.name,
				stat(rs, func(o outcome) float64 { return o.rate }, "%.0f"),
				stat(rs, func(o outcome) float64 { return ms(o.p50) }, "%.2f"),
				stat(rs, func(o outcome) float64 { return ms(o.p99) }, "%.2f"),
				stat(rs, func(o outcome) float64 { return us(o.cpu) }, "%.1f"),
				stat(rs, func(o outcome) float64 { return kib(o.rss) }, "%.1f"),
				miss, dis)
		}
		for k, s := range systems {
			if s.name != "statusd" {
				continue
			}
			for i, o := range results[k] {
				if o.sched.total() == 0 {
					continue
				}
				fmt.Fprintf(out, "%-18s %-10s run %d: goroutine wake-ups %d, %.2f%% waited over %s for a CPU, p99 ≤ %s; GC pauses %d, longest ≤ %s\n",
					"", "", i+1, o.sched.total(), 100*o.sched.above(900*time.Microsecond), o.sched.bound(900*time.Microsecond),
					o.sched.quantile(0.99), o.gc.total(), o.gc.quantile(1))
			}
		}
	}
	return nil
}

// stat renders the median of f over rs, with min–max when there are
// several.
func stat(rs []outcome, f func(outcome) float64, format string) string {
	v := make([]float64, len(rs))
	for i, o := range rs {
		v[i] = f(o)
	}
	slices.Sort(v)
	if len(v) == 0 {
		return "-"
	}
	med := v[len(v)/2]
	if len(v)%2 == 0 {
		med = (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	s := fmt.Sprintf(format, med)
	if len(v) > 1 {
		s += " (" + fmt.Sprintf(format, v[0]) + "–" + fmt.Sprintf(format, v[len(v)-1]) + ")"
	}
	return s
}

// idle measures statusd's RSS per idle stream: streams over HTTP/1.1
// (one connection each) when conns is 0, else over h2c spread over conns
// connections.
func idle(bin string, streams, conns int, out io.Writer) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	extra := []string{"--max-clients", strconv.Itoa(streams + 10)}
	if conns > 0 {
		extra = append(extra, "--h2c", "--http2-max-streams", strconv.Itoa(streams/conns+10))
	}
	srv, err := startStatusdServer(ctx, bin, extra...)
	if err != nil {
		return err
	}
	defer srv.stop()
	time.Sleep(500 * time.Millisecond)
	base := procStatus(srv.pid, "VmRSS:")
	m0 := goMetrics(srv.base)

	clientFor := func(i int) *http.Client { return http.DefaultClient }
	if conns > 0 {
		cs := make([]*http.Client, conns)
		for k := range cs {
			var p http.Protocols
			p.SetUnencryptedHTTP2(true)
			tr := &http.Transport{Protocols: &p}
			defer tr.CloseIdleConnections()
			cs[k] = &http.Client{Transport: tr}
		}
		clientFor = func(i int) *http.Client { return cs[i%conns] }
	} else {
		tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		clientFor = func(int) *http.Client { return c }
	}
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	sem := make(chan struct{}, 200)
	bodies := make([]io.Closer, streams)
	for i := range streams {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.streamURL(""), nil)
			resp, err := clientFor(i).Do(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				err = errors.New(resp.Status)
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			bodies[i] = resp.Body
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d streams failed to open: %v", n, firstErr.Load())
	}
	time.Sleep(2 * time.Second)
	rss := procStatus(srv.pid, "VmRSS:")
	m1 := goMetrics(srv.base)
	proto := "HTTP/1.1, one connection per stream"
	if conns > 0 {
		proto = fmt.Sprintf("h2c, %d connections (%d streams each)", conns, streams/conns)
	}
	fmt.Fprintf(out, "idle streams: %d over %s: statusd RSS %s at start, %s with the streams open: %.1f KiB per stream\n",
		streams, proto, mib(base), mib(rss), float64(rss-base)/1024/float64(streams))
	per := func(k string) float64 { return (m1[k] - m0[k]) / float64(streams) }
	fmt.Fprintf(out, "  per stream: goroutine stacks %.1f KiB, Go heap in use %.1f KiB, goroutines %.2f\n",
		per("go_memstats_stack_inuse_bytes")/1024, per("go_memstats_heap_inuse_bytes")/1024, per("go_goroutines"))
	for _, b := range bodies {
		if b != nil {
			b.Close()
		}
	}
	return nil
}

// goMetrics reads the Go runtime gauges of statusd's /metrics.
func goMetrics(base string) map[string]float64 {
	m := map[string]float64{}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "go_") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			m[name] = v
		}
	}
	return m
}

// histogram is a cumulative Prometheus histogram: upper bounds and counts.
type histogram struct {
	le    []float64
	count []float64
}

// readHistogram reads histogram name from the /metrics of base (empty if
// there is none, as for Centrifugo).
func readHistogram(base, name string) histogram {
	var h histogram
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return h
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	prefix := name + `_bucket{le="`
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		bound, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		le, err1 := strconv.ParseFloat(bound, 64)
		n, err2 := strconv.ParseFloat(value, 64)
		if err1 == nil && err2 == nil {
			h.le, h.count = append(h.le, le), append(h.count, n)
		}
	}
	return h
}

func (h histogram) minus(o histogram) histogram {
	if len(o.count) != len(h.count) {
		return h
	}
	d := histogram{le: h.le, count: make([]float64, len(h.count))}
	for i := range h.count {
		d.count[i] = h.count[i] - o.count[i]
	}
	return d
}

func (h histogram) total() int64 {
	if len(h.count) == 0 {
		return 0
	}
	return int64(h.count[len(h.count)-1])
}

// bound is the smallest bucket bound at or above d.
func (h histogram) bound(d time.Duration) time.Duration {
	for _, le := range h.le {
		if le >= d.Seconds() {
			return time.Duration(le * 1e9).Round(time.Microsecond)
		}
	}
	return d
}

// above is the fraction of observations above bound(d).
func (h histogram) above(d time.Duration) float64 {
	t := float64(h.total())
	if t == 0 {
		return 0
	}
	for i, le := range h.le {
		if le >= d.Seconds() {
			return (t - h.count[i]) / t
		}
	}
	return 0
}

// quantile is the upper bound of the bucket that holds quantile q.
func (h histogram) quantile(q float64) string {
	t := float64(h.total())
	if t == 0 {
		return "-"
	}
	for i, le := range h.le {
		if h.count[i] >= q*t {
			if math.IsInf(le, 1) {
				return "+Inf"
			}
			return time.Duration(le * 1e9).Round(time.Microsecond).String()
		}
	}
	return "+Inf"
}
