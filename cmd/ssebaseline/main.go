// Command ssebaseline compares the SSE gateway of statusbroadcaster with
// the stock watermill-http/v2 SSERouter in the scenario of issue 3: one
// client stops reading while N events of about 1 KiB are published, and
// another client reads them all. Each implementation runs in a fresh child
// process of this program, so that its goroutines and memory are its own.
//
//	go run ./cmd/ssebaseline -events 50000
//
// This is where statusbroadcaster uses watermill-http/v2: as the measured
// baseline that the gateway is held against (see the README).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmhttp "github.com/ThreeDotsLabs/watermill-http/v2/pkg/http"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// result is what one run reports.
type result struct {
	Impl       string  `json:"impl"`
	Events     int     `json:"events"`
	Received   int     `json:"received"`     // by the reading client
	Seconds    float64 `json:"seconds"`      // until the reader had them all, or gave up
	Goroutines int     `json:"goroutines"`   // after the run, stalled client still connected
	RSSMiB     float64 `json:"rss_mib"`      // VmRSS after the run
	PeakMiB    float64 `json:"peak_mib"`     // VmHWM
	OutOfOrder int     `json:"out_of_order"` // events the reader got before an earlier one
	GotLast    bool    `json:"got_last"`     // the reader got the last event (latest state)
}

func main() {
	impl := flag.String("impl", "", "run one implementation (stock, gateway or gateway-big-outbox) and print its result as JSON; empty runs both in child processes and prints a table")
	events := flag.Int("events", 50_000, "events to publish")
	size := flag.Int("size", 1024, "approximate size of an event in bytes")
	flag.Parse()
	if *impl == "" {
		compare(*events, *size)
		return
	}
	r, err := runOne(*impl, *events, *size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ssebaseline:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func compare(events, size int) {
	fmt.Printf("%d events of ~%d bytes, one stalled client, one reading client (%s, %d CPUs)\n\n", events, size, runtime.Version(), runtime.NumCPU())
	fmt.Printf("| implementation | events received by the reader | got the last | out of order | time | goroutines after | RSS after | peak RSS |\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|\n")
	for _, impl := range []string{"stock", "gateway", "gateway-big-outbox"} {
		out, err := exec.Command(os.Args[0], "-impl", impl, "-events", strconv.Itoa(events), "-size", strconv.Itoa(size)).Output()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", impl, err)
			os.Exit(1)
		}
		var r result
		if err := json.Unmarshal(out, &r); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v: %s\n", impl, err, out)
			os.Exit(1)
		}
		name := map[string]string{
			"stock":              "watermill-http/v2 SSERouter (gochannel)",
			"gateway":            "statusbroadcaster SSE gateway (defaults)",
			"gateway-big-outbox": "statusbroadcaster SSE gateway, outbox holding the whole burst",
		}[impl]
		fmt.Printf("| %s | %d / %d | %v | %d | %.1f s | %d | %.0f MiB | %.0f MiB |\n",
			name, r.Received, r.Events, r.GotLast, r.OutOfOrder, r.Seconds, r.Goroutines, r.RSSMiB, r.PeakMiB)
	}
}

func runOne(impl string, events, size int) (result, error) {
	r := result{Impl: impl, Events: events}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	var (
		handler http.Handler
		path    string
		publish func(i int) error
		stop    func()
	)
	pad := strings.Repeat("x", max(0, size-300))
	switch impl {
	case "stock":
		handler, path, publish, stop, err = stock(pad)
	case "gateway":
		handler, path, publish, stop, err = gateway(pad, pubsub.Config{})
	case "gateway-big-outbox":
		handler, path, publish, stop, err = gateway(pad, pubsub.Config{OutboxCapacity: events})
	default:
		err = fmt.Errorf("unknown -impl %q", impl)
	}
	if err != nil {
		return r, err
	}
	defer stop()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	addr := ln.Addr().String()

	stalled, err := dial(addr, path, 4<<10)
	if err != nil {
		return r, fmt.Errorf("stalled client: %w", err)
	}
	defer stalled.Close()
	reader, err := dial(addr, path, 0)
	if err != nil {
		return r, fmt.Errorf("reader: %w", err)
	}
	defer reader.Close()
	time.Sleep(200 * time.Millisecond) // both subscribed

	start := time.Now()
	got := make(chan [3]int, 1)
	go func() {
		// Read until every event arrived, or the last one did and the
		// stream has been quiet for a second (an implementation may
		// coalesce intermediate events).
		n, disorder, last, sawLast := 0, 0, -1, 0
		br := bufio.NewReaderSize(reader, 64<<10)
		_ = reader.SetReadDeadline(time.Now().Add(2 * time.Minute))
		for n < events {
			line, err := br.ReadSlice('\n')
			if err != nil {
				break
			}
			i := strings.Index(string(line), `"name":"e`)
			if i < 0 {
				continue
			}
			rest := string(line[i+len(`"name":"e`):])
			seq, err := strconv.Atoi(rest[:strings.IndexByte(rest, '"')])
			if err != nil {
				continue
			}
			if seq < last {
				disorder++
			}
			last = max(last, seq)
			n++
			if seq == events-1 {
				sawLast = 1
			}
			if sawLast == 1 {
				_ = reader.SetReadDeadline(time.Now().Add(time.Second))
			}
		}
		got <- [3]int{n, disorder, sawLast}
	}()
	for i := range events {
		if err := publish(i); err != nil {
			return r, err
		}
	}
	select {
	case g := <-got:
		r.Received, r.OutOfOrder, r.GotLast = g[0], g[1], g[2] == 1
	case <-time.After(2 * time.Minute):
	}
	r.Seconds = time.Since(start).Seconds()
	time.Sleep(time.Second) // let whatever the stalled client holds settle
	runtime.GC()
	r.Goroutines = runtime.NumGoroutine()
	r.RSSMiB, r.PeakMiB = memory()
	return r, nil
}

// stock wires the watermill-http/v2 SSERouter as its documentation shows:
// an upstream gochannel (default config) and a StreamAdapter.
func stock(pad string) (http.Handler, string, func(int) error, func(), error) {
	logger := watermill.NopLogger{}
	ps := gochannel.NewGoChannel(gochannel.Config{}, logger)
	router, err := wmhttp.NewSSERouter(wmhttp.SSERouterConfig{UpstreamSubscriber: ps}, logger)
	if err != nil {
		return nil, "", nil, nil, err
	}
	const topic = "projects"
	h := router.AddHandler(topic, adapter{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = router.Run(ctx) }()
	<-router.Running()
	publish := func(i int) error {
		return ps.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte(envelope(i, pad))))
	}
	return h, "/events", publish, func() { cancel(); _ = router.Close(); _ = ps.Close() }, nil
}

type adapter struct{}

func (adapter) InitialStreamResponse(http.ResponseWriter, *http.Request) (any, bool) {
	return map[string]string{"status": "subscribed"}, true
}

func (adapter) NextStreamResponse(_ *http.Request, msg *message.Message) (any, bool) {
	return json.RawMessage(msg.Payload), true
}

// gateway wires statusbroadcaster as statusd does, in memory.
func gateway(pad string, cfg pubsub.Config) (http.Handler, string, func(int) error, func(), error) {
	bus, err := pubsub.NewInMemory(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, "", nil, nil, err
	}
	api := httpapi.New(httpapi.Config{}, bus, nil)
	publish := func(i int) error {
		return bus.BroadcastProjectUpdate(project(i, pad))
	}
	stop := func() {
		api.CloseStreams()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bus.Close(ctx)
	}
	return api, "/events/projects?snapshot=false", publish, stop, nil
}

// project returns event i: 100 projects, each updated in turn.
func project(i int, pad string) domain.Project {
	t := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	return domain.Project{
		ID: fmt.Sprintf("p%03d", i%100), Name: fmt.Sprintf("e%d", i), Status: domain.StatusCompiling,
		CodeRepo: "https://github.com/example/app?" + pad, DocsRepo: "https://github.com/example/app_docs",
		InsertedAt: t, UpdatedAt: t,
	}
}

func envelope(i int, pad string) string {
	b, _ := json.Marshal(domain.Event{Type: domain.EventProjectUpdated, Project: project(i, pad)})
	return string(b)
}

// dial opens an event stream on a raw connection; a positive readBuffer
// makes a client that will stall with a small receive buffer.
func dial(addr, path string, readBuffer int) (net.Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if readBuffer > 0 {
		_ = conn.(*net.TCPConn).SetReadBuffer(readBuffer)
	}
	_, err = io.WriteString(conn, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nAccept: text/event-stream\r\n\r\n")
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// memory returns VmRSS and VmHWM of this process in MiB.
func memory() (rss, peak float64) {
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		for name, dst := range map[string]*float64{"VmRSS:": &rss, "VmHWM:": &peak} {
			if v, ok := strings.CutPrefix(line, name); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				*dst = kb / 1024
			}
		}
	}
	return rss, peak
}
