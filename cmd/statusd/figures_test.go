package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// TestDurableFigures measures, in one run, POST /events and the lag from
// the 202 to the event on an SSE stream (through Kafka in kafka mode), in
// memory mode and in durable mode (--database-url), at a fixed rate and at
// full speed, and the forwarder's batch size. It writes the figures of
// BENCHMARKS.md:
//
//	STATUSD_FIGURES=1 go test -run TestDurableFigures -v -timeout 10m ./cmd/statusd/
//
// It also checks what it measures: every event arrives, in order per
// project.
func TestDurableFigures(t *testing.T) {
	if os.Getenv("STATUSD_FIGURES") == "" {
		t.Skip("figures for BENCHMARKS.md: set STATUSD_FIGURES=1")
	}
	cluster := startKfake(t, 0, t.TempDir())
	t.Cleanup(func() { cluster.Close() })
	broker := cluster.ListenAddrs()[0]
	kafka := []string{"--pubsub", "kafka", "--kafka-brokers", broker}
	rate := 200
	seconds := 10
	type mode struct {
		name string
		args []string
		db   bool
	}
	modes := []mode{
		{"memory", nil, false},
		{"memory + database", nil, true},
		{"kafka", kafka, false},
		{"kafka + database", kafka, true},
		{"kafka + database, outbox batch 1", append(slices.Clone(kafka), "--outbox-batch", "1"), true},
	}
	var rows []string
	for i, m := range modes {
		args := append(slices.Clone(m.args), "--kafka-client-id", fmt.Sprint("figures-", i))
		if m.db {
			args = append(args, "--database-url", pgtest.Schema(t))
		}
		a := startChild(t, args...)
		require.Eventually(t, func() bool { return status(t, a.URL+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
		paced := measure(t, a.URL, fmt.Sprintf("paced%d", i), rate, seconds, 0)
		full := measure(t, a.URL, fmt.Sprintf("full%d", i), 0, 5, 16)
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %.0f | %s | %s |", m.name,
			ms(paced.post.p(50)), ms(paced.post.p(99)), ms(paced.lag.p(50))+" / "+ms(paced.lag.p(99)),
			full.rate, ms(full.post.p(99)), ms(full.lag.p(50))+" / "+ms(full.lag.p(99))))
		t.Log(rows[len(rows)-1])
		a.Kill()
	}
	t.Logf("\n| mode | POST p50 at %d/s | POST p99 at %d/s | 202 → SSE p50 / p99 at %d/s | full speed, 16 posters: events/s | POST p99 | 202 → SSE p50 / p99 |\n|---|---|---|---|---|---|---|\n%s",
		rate, rate, rate, strings.Join(rows, "\n"))
}

type samples []time.Duration

func (s samples) p(q int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return c[min(len(c)-1, len(c)*q/100)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

type result struct {
	post, lag samples
	rate      float64
}

// measure POSTs events of 10 projects — at rate per second for seconds
// (rate > 0), or from posters concurrent posters as fast as they go — and
// reads them back from a stream of the same statusd.
func measure(t *testing.T, base, prefix string, rate, seconds, posters int) result {
	t.Helper()
	resp, err := http.Get(base + "/events/projects?snapshot=false")
	require.NoError(t, err)
	defer resp.Body.Close()
	type arrival struct {
		id  string
		seq int
		at  time.Time
	}
	arrivals := make(chan arrival, 1<<16)
	go func() {
		defer close(arrivals)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			at := time.Now()
			var ev domain.Event
			if json.Unmarshal([]byte(line[6:]), &ev) != nil || !strings.HasPrefix(ev.Project.ID, prefix) {
				continue
			}
			var n int
			_, _ = fmt.Sscanf(ev.Project.Name, "seq-%d", &n)
			arrivals <- arrival{ev.Project.ID, n, at}
		}
	}()

	// One poster per project, so that a project's events are POSTed in
	// order; at a fixed rate, events are scheduled round robin and a POST's
	// time counts from its schedule (a slow answer delays the next one).
	projects := 10
	if rate == 0 {
		projects = posters
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var mu sync.Mutex
	acked := map[string]time.Time{} // id/seq → when the 202 came
	var post samples
	one := func(id string, n int, scheduled time.Time) {
		code, body := tryPost(client, base, seqProject(id, n))
		if code != http.StatusAccepted {
			t.Errorf("POST: %d %s", code, body)
			return
		}
		mu.Lock()
		post = append(post, time.Since(scheduled))
		acked[fmt.Sprintf("%s/%d", id, n)] = time.Now()
		mu.Unlock()
	}
	var wg sync.WaitGroup
	start := time.Now()
	if rate > 0 {
		queues := make([]chan time.Time, projects)
		for k := range queues {
			queues[k] = make(chan time.Time, rate*seconds)
			id := fmt.Sprintf("%s-%d", prefix, k)
			wg.Go(func() {
				n := 0
				for at := range queues[k] {
					one(id, n, at)
					n++
				}
			})
		}
		tick := time.NewTicker(time.Second / time.Duration(rate))
		for i := range rate * seconds {
			queues[i%projects] <- <-tick.C
		}
		tick.Stop()
		for _, q := range queues {
			close(q)
		}
	} else {
		stop := time.Now().Add(time.Duration(seconds) * time.Second)
		for k := range posters {
			id := fmt.Sprintf("%s-%d", prefix, k)
			wg.Go(func() {
				for n := 0; time.Now().Before(stop); n++ {
					one(id, n, time.Now())
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	mu.Lock()
	total := len(acked)
	mu.Unlock()

	// Wait for the last event of every project. A stream that falls more
	// than its queue behind skips superseded events (coalescing; see the
	// README), so at full speed not every event needs to arrive — but the
	// latest of each project must, and in order.
	lastAcked := map[string]int{}
	mu.Lock()
	for key := range acked {
		id, seqText, _ := strings.Cut(key, "/")
		var n int
		_, _ = fmt.Sscanf(seqText, "%d", &n)
		lastAcked[id] = max(lastAcked[id], n)
	}
	mu.Unlock()
	var lag samples
	last := map[string]int{}
	timeout := time.After(3 * time.Minute) // a slow forwarder drains its backlog
	for done := 0; done < len(lastAcked); {
		select {
		case a, ok := <-arrivals:
			require.True(t, ok, "stream ended")
			if n, seen := last[a.id]; seen {
				require.Greater(t, a.seq, n, "project %s out of order", a.id)
			}
			last[a.id] = a.seq
			if a.seq == lastAcked[a.id] {
				done++
			}
			mu.Lock()
			ackedAt, ok := acked[fmt.Sprintf("%s/%d", a.id, a.seq)]
			mu.Unlock()
			if ok {
				// An event can reach the stream before its POST's answer
				// reaches the client: that lag counts as 0.
				lag = append(lag, max(0, a.at.Sub(ackedAt)))
			}
		case <-timeout:
			require.FailNow(t, "events missing", "last seen %v, last acknowledged %v", last, lastAcked)
		}
	}
	if len(lag) < total {
		t.Logf("%s: %d of %d events reached the stream (the rest coalesced)", prefix, len(lag), total)
	}
	_ = resp.Body.Close()
	return result{post: post, lag: lag, rate: float64(total) / elapsed.Seconds()}
}
