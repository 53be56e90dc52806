// Command statusload is the load program of statusbroadcaster: it drives a
// running statusd (or one it starts) over real HTTP — many SSE clients, some
// of them stalled, and a stream of POSTed events — and reports throughput,
// delivery latency, order and loss per client, and the server's memory.
//
//	go build -o bin/statusd ./cmd/statusd
//	go run ./cmd/statusload --statusd bin/statusd --clients 2000 --events 20000
//
// It only ever connects to the address it is given (loopback when it starts
// statusd itself), and every loop in it is bounded by --events and
// --timeout.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	url      string
	statusd  string
	clients  int
	stalled  int
	events   int
	projects int
	payload  int
	posters  int
	timeout  time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "", "base URL of a running statusd (e.g. http://127.0.0.1:8080)")
	flag.StringVar(&o.statusd, "statusd", "", "path of a statusd binary to start on a free loopback port instead of --url")
	flag.IntVar(&o.clients, "clients", 1000, "SSE clients that read every event (half on projects:*, half on one project each)")
	flag.IntVar(&o.stalled, "stalled", 1, "SSE clients that connect and never read")
	flag.IntVar(&o.events, "events", 10_000, "events to POST")
	flag.IntVar(&o.projects, "projects", 20, "distinct projects the events are about")
	flag.IntVar(&o.payload, "payload", 1024, "approximate size of each envelope in bytes")
	flag.IntVar(&o.posters, "posters", 4, "concurrent POSTers (each owns a share of the projects, so order per project is defined)")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	var co compareOptions
	doCompare := flag.Bool("compare", false, "run the scenarios ORDER, FILTERED, FANOUT and STALLED against statusd (--statusd) and Centrifugo, alternating, and print medians with min–max")
	flag.BoolVar(&co.quick, "quick", false, "with --compare: small scenarios, one run each (under 3 minutes)")
	flag.IntVar(&co.repeat, "repeat", 3, "with --compare: runs of each scenario on each system")
	flag.StringVar(&co.only, "scenarios", "", "with --compare: run only the scenarios whose name contains this (e.g. FANOUT)")
	flag.StringVar(&co.centrifugo, "centrifugo", "", "with --compare: Centrifugo v6 binary (default: centrifugo on PATH or in $GOPATH/bin, if any; off: statusd alone)")
	idleStreams := flag.Int("idle", 0, "measure statusd's (--statusd) RSS per idle stream with this many streams, then exit")
	h2cConns := flag.Int("h2c-conns", 0, "with --idle: open the streams over h2c on this many connections (0: HTTP/1.1, a connection each)")
	flag.Parse()
	if *doCompare || *idleStreams > 0 {
		var err error
		switch {
		case o.statusd == "":
			err = errors.New("--compare and --idle need --statusd")
		case *idleStreams > 0:
			err = idle(o.statusd, *idleStreams, *h2cConns, os.Stdout)
		default:
			switch co.centrifugo {
			case "":
				co.centrifugo = findCentrifugo()
			case "off":
				co.centrifugo = ""
			}
			if co.quick {
				co.repeat = 1
			}
			co.statusd, co.payload, co.timeout = o.statusd, o.payload, max(o.timeout, 30*time.Minute)
			err = compare(co, os.Stdout)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "statusload:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "statusload:", err)
		os.Exit(1)
	}
}

func run(o options, out io.Writer) error {
	if o.clients < 0 || o.stalled < 0 || o.events <= 0 || o.projects <= 0 || o.posters <= 0 {
		return errors.New("counts must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	var pid int
	if o.statusd != "" {
		base, p, stop, err := startStatusd(ctx, o.statusd)
		if err != nil {
			return err
		}
		defer stop()
		o.url, pid = base, p
	}
	if o.url == "" {
		return errors.New("give --url or --statusd")
	}
	if _, err := url.Parse(o.url); err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.posters * 2}}
	baseRSS := procStatus(pid, "VmRSS:")

	// Stalled clients: a raw connection that asks for the stream and
	// never reads a byte.
	for range o.stalled {
		conn, err := stallStream(o.url)
		if err != nil {
			return err
		}
		defer conn.Close()
	}

	readers := make([]*reader, o.clients)
	var ready sync.WaitGroup
	for i := range readers {
		path := "/events/projects?snapshot=false"
		var only string
		if i%2 == 1 {
			only = projectID(i / 2 % o.projects)
			path = "/events/projects/" + only + "?snapshot=false"
		}
		r := &reader{only: only, next: map[string]int{}}
		readers[i] = r
		ready.Add(1)
		go r.run(ctx, client, o.url+path, &ready)
	}
	ready.Wait()
	for _, r := range readers {
		if r.err != nil {
			return fmt.Errorf("opening streams: %w", r.err)
		}
	}
	idleRSS := procStatus(pid, "VmRSS:")
	fmt.Fprintf(out, "streams open: %d readers, %d stalled\n", o.clients, o.stalled)

	start := time.Now()
	if err := post(ctx, client, o); err != nil {
		return err
	}
	posted := time.Since(start)

	// Every reader gets every event it selects, or the timeout says why.
	want := func(r *reader) int64 {
		if r.only == "" {
			return int64(o.events)
		}
		n, _ := strconv.Atoi(strings.TrimPrefix(r.only, "load-"))
		return int64(eventsOf(n, o))
	}
	for _, r := range readers {
		for r.received.Load() < want(r) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
	}
	delivered := time.Since(start)
	cancel()
	peakRSS := procStatus(pid, "VmHWM:")

	var lat []time.Duration
	var total, outOfOrder, missing int64
	for _, r := range readers {
		r.mu.Lock()
		lat = append(lat, r.latencies...)
		outOfOrder += r.outOfOrder
		r.mu.Unlock()
		total += r.received.Load()
		missing += max(0, want(r)-r.received.Load())
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))].Round(time.Microsecond)
	}
	fmt.Fprintf(out, "posted %d events of ~%d B in %s (%.0f events/s)\n", o.events, o.payload, posted.Round(time.Millisecond), float64(o.events)/posted.Seconds())
	fmt.Fprintf(out, "delivered %d events to %d readers in %s (%.0f deliveries/s)\n", total, o.clients, delivered.Round(time.Millisecond), float64(total)/delivered.Seconds())
	fmt.Fprintf(out, "latency post→receive: p50 %s  p99 %s  max %s\n", pct(0.50), pct(0.99), pct(1))
	fmt.Fprintf(out, "missing %d, out of order %d\n", missing, outOfOrder)
	if pid != 0 {
		fmt.Fprintf(out, "statusd RSS: start %s, %d streams idle %s (%.1f KiB/stream), peak %s\n",
			mib(baseRSS), o.clients+o.stalled, mib(idleRSS), float64(idleRSS-baseRSS)/1024/float64(max(1, o.clients+o.stalled)), mib(peakRSS))
	}
	if missing > 0 || outOfOrder > 0 {
		return fmt.Errorf("%d events missing, %d out of order", missing, outOfOrder)
	}
	return nil
}

func projectID(n int) string { return "load-" + strconv.Itoa(n) }

// eventsOf returns how many of o.events are about project n.
func eventsOf(n int, o options) int {
	c := o.events / o.projects
	if n < o.events%o.projects {
		c++
	}
	return c
}

// post sends o.events envelopes: event i is about project i % o.projects,
// and each poster owns the projects p with p % o.posters == its index, so
// each project's events are posted in order by one goroutine.
func post(ctx context.Context, client *http.Client, o options) error {
	pad := strings.Repeat("x", max(0, o.payload-300))
	var wg sync.WaitGroup
	errs := make(chan error, o.posters)
	for w := range o.posters {
		wg.Go(func() {
			for i := 0; i < o.events; i++ {
				p := i % o.projects
				if p%o.posters != w {
					continue
				}
				if err := postJSON(ctx, client, o.url+"/events", envelope(projectID(p), i, pad), http.StatusAccepted); err != nil {
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

// envelope is a project_updated event of project id named seq-i, with
// pad in its code_repo URL and the current time as its updated_at.
func envelope(id string, i int, pad string) []byte {
	return fmt.Appendf(nil, `{"event":"project_updated","project":{"id":%q,"name":"seq-%d","status":"compiling","code_repo":"https://example.com/%s","docs_repo":"","inserted_at":"2024-01-01T00:00:00Z","updated_at":%q}}`,
		id, i, pad, time.Now().UTC().Format(time.RFC3339Nano))
}

// postJSON POSTs body to u as JSON and reads the whole answer; it fails
// unless the status is want (0: any 2xx).
func postJSON(ctx context.Context, client *http.Client, u string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if want == 0 && resp.StatusCode/100 == 2 || resp.StatusCode == want {
		return nil
	}
	return fmt.Errorf("POST %s: %s", u, resp.Status)
}

// reader is one SSE client that checks what it receives.
type reader struct {
	only     string // "" for projects:*
	received atomic.Int64
	err      error

	mu         sync.Mutex
	next       map[string]int // lowest sequence expected next, per project
	outOfOrder int64
	latencies  []time.Duration
}

func (r *reader) run(ctx context.Context, client *http.Client, u string, ready *sync.WaitGroup) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := client.Do(req)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if err != nil {
		r.err = err
		ready.Done()
		return
	}
	defer resp.Body.Close()
	ready.Done()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data: "))
		if !ok {
			continue
		}
		// Pick the three fields out without a full JSON decode: the load
		// program must cost the machine far less than the server does.
		id, seqText, at := field(data, `"id":"`), field(data, `"name":"seq-`), field(data, `"updated_at":"`)
		seq, err := strconv.Atoi(seqText)
		sent, err2 := time.Parse(time.RFC3339Nano, at)
		if err != nil || err2 != nil {
			continue
		}
		r.mu.Lock()
		if seq < r.next[id] {
			r.outOfOrder++
		}
		r.next[id] = seq + 1
		r.latencies = append(r.latencies, time.Since(sent))
		r.mu.Unlock()
		r.received.Add(1)
	}
}

// field returns the string value that follows prefix in data, up to the
// next quote.
func field(data []byte, prefix string) string {
	i := bytes.Index(data, []byte(prefix))
	if i < 0 {
		return ""
	}
	rest := data[i+len(prefix):]
	if j := bytes.IndexByte(rest, '"'); j >= 0 {
		return string(rest[:j])
	}
	return ""
}

// stallStream opens a stream that is never read.
func stallStream(base string) (net.Conn, error) {
	u, _ := url.Parse(base)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintf(conn, "GET /events/projects?snapshot=false HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", u.Host)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

var listening = regexp.MustCompile(`listening on (http://[^ "]+)`)

// startStatusd starts bin on a free loopback port and returns its URL, its
// pid and a function that stops it.
func startStatusd(ctx context.Context, bin string) (string, int, func(), error) {
	return startStatusdArgs(ctx, bin)
}

// startStatusdArgs is startStatusd with extra flags (later ones win).
func startStatusdArgs(ctx context.Context, bin string, extra ...string) (string, int, func(), error) {
	cmd := exec.Command(bin, append([]string{"--addr", "127.0.0.1:0", "--max-clients", "100000", "--log-level", "INFO"}, extra...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case u := <-found:
		return u, cmd.Process.Pid, stop, nil
	case <-ctx.Done():
		stop()
		return "", 0, nil, errors.New("statusd did not say where it listens")
	case <-time.After(10 * time.Second):
		stop()
		return "", 0, nil, errors.New("statusd did not say where it listens within 10s")
	}
}

// procStatus returns a memory field of /proc/<pid>/status ("VmRSS:" the
// resident set size, "VmHWM:" its peak) in bytes (0 if unknown).
func procStatus(pid int, field string) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
