package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// startChild runs statusd as a child process with args.
func startChild(t *testing.T, args ...string) *httpapitest.Statusd {
	t.Helper()
	return httpapitest.StartStatusd(t, httpapitest.BuildStatusd(t), nil, args...)
}

// startKfake starts a one-broker kfake on port (0: any) keeping its data in
// dir, so that it can be stopped and started again with the same records.
func startKfake(t *testing.T, port int, dir string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir), kfake.SeedTopics(3, pubsub.DefaultTopic))
	require.NoError(t, err)
	return c
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	n, err := strconv.Atoi(p)
	require.NoError(t, err)
	return n
}

// seqProject is event n of project id: its name carries n, so that order
// and loss can be read off every copy of it.
func seqProject(id string, n int) domain.Project {
	return domain.Project{ID: id, Name: fmt.Sprintf("seq-%06d", n), Status: domain.StatusCompiling,
		UpdatedAt: time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Millisecond)}
}

func seqOf(t *testing.T, p domain.Project) int {
	var n int
	_, err := fmt.Sscanf(p.Name, "seq-%d", &n)
	require.NoError(t, err, "name %q", p.Name)
	return n
}

// tryPost POSTs one event and returns the status code (0: no answer).
func tryPost(client *http.Client, base string, p domain.Project) (int, string) {
	body, _ := json.Marshal(domain.Event{Type: domain.EventProjectUpdated, Project: p})
	resp, err := client.Post(base+"/events", "application/json", strings.NewReader(string(body)))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// kafkaLog reads the topic from its start, records of the projects with
// the prefix, until it holds at least n or the deadline passes.
func kafkaLog(t *testing.T, brokers []string, prefix string, n int, within time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(pubsub.DefaultTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	var recs []*kgo.Record
	deadline := time.Now().Add(within)
	for len(recs) < n && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		fetches.EachRecord(func(r *kgo.Record) {
			if strings.HasPrefix(string(r.Key), prefix) {
				recs = append(recs, r)
			}
		})
	}
	return recs
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// committedUUIDs returns the UUIDs of every event in the outbox table.
func committedUUIDs(t *testing.T, pool *pgxpool.Pool) map[string]bool {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT payload->>'uuid' FROM watermill_statusbroadcaster_outbox`)
	require.NoError(t, err)
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var u string
		require.NoError(t, rows.Scan(&u))
		out[u] = true
	}
	require.NoError(t, rows.Err())
	return out
}

// checkKafka checks the topic's records of the projects: every
// acknowledged event is there; per project, once repeats (same ce_id) are
// dropped, the sequence only goes up; every record was committed. It
// returns the number of repeats.
func checkKafka(t *testing.T, recs []*kgo.Record, acked map[string]int, committed map[string]bool) (repeats int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	for _, r := range recs {
		id := header(r, "ce_id")
		require.True(t, committed[id], "record %s of %s was never committed", id, r.Key)
		if seen[id] {
			repeats++
			continue
		}
		seen[id] = true
		var ev domain.Event
		require.NoError(t, json.Unmarshal(r.Value, &ev))
		n := seqOf(t, ev.Project)
		require.Equal(t, last[string(r.Key)], n, "project %s: event %d missing or reordered (got %d)", r.Key, last[string(r.Key)], n)
		last[string(r.Key)] = n + 1
	}
	for id, n := range acked {
		assert.GreaterOrEqual(t, last[id], n, "project %s: acknowledged events missing from Kafka", id)
	}
	return repeats
}

// checkStream reads a stream until every acknowledged event of the
// projects has arrived: per project in order, each once.
func checkStream(t *testing.T, s <-chan sseEvent, prefix string, acked map[string]int) {
	t.Helper()
	checkStreamRepeats(t, s, prefix, acked, false)
}

// checkStreamRepeats is checkStream; with retried set, an event may follow
// itself once more (a POST answered 503 whose commit did go through, then
// retried by the client): the same state again, never an older one.
func checkStreamRepeats(t *testing.T, s <-chan sseEvent, prefix string, acked map[string]int, retried bool) (repeats int) {
	t.Helper()
	next := map[string]int{}
	timeout := time.After(60 * time.Second)
	for {
		done := true
		for id, n := range acked {
			done = done && next[id] >= n
		}
		if done {
			return repeats
		}
		select {
		case ev, ok := <-s:
			require.True(t, ok, "the stream ended")
			id := ev.Data.Project.ID
			if !strings.HasPrefix(id, prefix) {
				continue
			}
			n := seqOf(t, ev.Data.Project)
			if retried && n == next[id]-1 {
				repeats++
				continue
			}
			require.Equal(t, next[id], n, "project %s on the stream: missing, repeated or out of order", id)
			next[id]++
		case <-timeout:
			require.FailNow(t, "events missing from the stream", "next %v, acknowledged %v", next, acked)
		}
	}
}

// SIGKILL after commits and before forwarding: statusd accepted events
// (202: committed to the outbox) while Kafka was down, and was killed. After
// Kafka and statusd restart, every accepted event reaches Kafka and a
// gateway's SSE stream, in order per project, once.
func TestDurableCrashAfterCommitBeforeForwarding(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	dbURL := pgtest.Schema(t)
	pool := pgtest.Pool(t, dbURL)
	dir := t.TempDir()
	cluster := startKfake(t, 0, dir)
	broker := cluster.ListenAddrs()[0]
	t.Cleanup(func() { cluster.Close() })
	kafka := []string{"--pubsub", "kafka", "--kafka-brokers", broker}
	gateway := statusd(t, append(kafka, "--kafka-client-id", "gateway")...)
	require.Eventually(t, func() bool { return status(t, gateway+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	events := stream(t, gateway+"/events/projects?snapshot=false")

	cluster.Close() // Kafka down: nothing can be forwarded
	a := startChild(t, append(kafka, "--database-url", dbURL, "--kafka-client-id", "producer")...)
	const projects, each = 4, 15
	acked := map[string]int{}
	client := &http.Client{Timeout: 10 * time.Second}
	for n := range each {
		for p := range projects {
			id := fmt.Sprintf("before-%d", p)
			code, body := tryPost(client, a.URL, seqProject(id, n))
			require.Equal(t, http.StatusAccepted, code, body)
			acked[id] = n + 1
		}
	}
	pending, err := postgres.Pending(context.Background(), pool, "")
	require.NoError(t, err)
	require.EqualValues(t, projects*each, pending, "all committed, none forwarded")
	a.Kill()

	cluster = startKfake(t, portOf(t, broker), dir)
	startChild(t, append(kafka, "--database-url", dbURL, "--kafka-client-id", "producer")...)
	checkStream(t, events, "before-", acked)
	recs := kafkaLog(t, []string{broker}, "before-", projects*each, 30*time.Second)
	repeats := checkKafka(t, recs, acked, committedUUIDs(t, pool))
	assert.Zero(t, repeats, "nothing was forwarded before the crash, so nothing is forwarded twice")
	require.Eventually(t, func() bool {
		n, err := postgres.Pending(context.Background(), pool, "")
		return err == nil && n == 0
	}, 20*time.Second, 50*time.Millisecond)
}

// SIGKILL in the middle of forwarding: posters keep statusd's outbox busy
// while it is killed. After a restart, every accepted event reaches Kafka
// and a gateway's stream, in order per project; repeats in Kafka (at least
// once) carry their ce_id and never break a project's order once skipped,
// and the gateway skips them; no record that was not committed appears —
// among them the event of a transaction left open during the restart and
// then rolled back.
func TestDurableCrashWhileForwarding(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	dbURL := pgtest.Schema(t)
	pool := pgtest.Pool(t, dbURL)
	cluster := startKfake(t, 0, t.TempDir())
	broker := cluster.ListenAddrs()[0]
	t.Cleanup(func() { cluster.Close() })
	kafka := []string{"--pubsub", "kafka", "--kafka-brokers", broker}
	gateway := statusd(t, append(kafka, "--kafka-client-id", "gateway")...)
	require.Eventually(t, func() bool { return status(t, gateway+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	events := stream(t, gateway+"/events/projects?snapshot=false")

	producer := append(kafka, "--database-url", dbURL, "--kafka-client-id", "producer", "--outbox-batch", "200")
	a := startChild(t, producer...)
	require.Eventually(t, func() bool { return status(t, a.URL+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)

	const projects = 5
	var mu sync.Mutex
	acked := map[string]int{}
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for p := range projects {
		id := fmt.Sprintf("mid-%d", p)
		wg.Go(func() {
			for n := 0; ; n++ {
				code, _ := tryPost(client, a.URL, seqProject(id, n))
				if code != http.StatusAccepted {
					return // killed
				}
				mu.Lock()
				acked[id] = n + 1
				mu.Unlock()
			}
		})
	}
	// Kill once a good part has been forwarded and more is waiting.
	require.Eventually(t, func() bool {
		return metric(t, gateway, "statusbroadcaster_events_dispatched_total") >= 300
	}, 30*time.Second, 10*time.Millisecond)
	pendingAtKill, err := postgres.Pending(context.Background(), pool, "")
	require.NoError(t, err)
	a.Kill()
	wg.Wait()
	t.Logf("killed with %d events pending in the outbox; acknowledged %v", pendingAtKill, acked)

	// A transaction that writes an event and never commits, open while
	// statusd restarts and forwards: its event must never appear.
	tx, err := pool.Begin(context.Background())
	require.NoError(t, err)
	ghost, err := domain.NewProjectUpdated(seqProject("mid-uncommitted", 0))
	require.NoError(t, err)
	require.NoError(t, postgres.NewOutbox("", nil).Write(context.Background(), wsql.TxFromPgx(tx), ghost))

	startChild(t, producer...)
	time.Sleep(time.Second)
	require.NoError(t, tx.Rollback(context.Background()))
	checkStream(t, events, "mid-", acked)
	total := 0
	for _, n := range acked {
		total += n
	}
	recs := kafkaLog(t, []string{broker}, "mid-", total, 30*time.Second)
	require.Eventually(t, func() bool {
		n, err := postgres.Pending(context.Background(), pool, "")
		return err == nil && n == 0
	}, 30*time.Second, 50*time.Millisecond)
	recs = kafkaLog(t, []string{broker}, "mid-", len(recs)+1, 2*time.Second) // and whatever came after
	repeats := checkKafka(t, recs, acked, committedUUIDs(t, pool))
	t.Logf("%d records in Kafka for %d acknowledged events: %d repeats (at least once)", len(recs), total, repeats)
}

// proxy is a TCP proxy to PostgreSQL that a test can cut (every open
// connection closed, new ones refused) or hang (connections accepted and
// kept, nothing forwarded either way) until it is restored.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	hung   chan struct{} // closed when not hung
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}, hung: make(chan struct{})}
	close(p.hung)
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		_ = ln.Close()
		p.restore()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.pipe(up, c) })
		p.wg.Go(func() { p.pipe(c, up) })
	}
}

// pipe copies src to dst, holding every chunk while the proxy hangs.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hung := p.hung
			p.mu.Unlock()
			<-hung
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

func (p *proxy) hang() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hung = make(chan struct{})
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
	select {
	case <-p.hung:
	default:
		close(p.hung)
	}
}

// A PostgreSQL outage while events are posted and forwarded, simulated by
// a proxy between statusd and the server (the shared server itself cannot
// be restarted safely here): "restart" cuts every connection and refuses
// new ones for two seconds; "hang" keeps connections open and answers
// nothing for two seconds. POST answers 503 with a JSON error within the
// documented bound (--database-timeout plus a little), never later; every
// event that got 202 reaches the stream, in order (a 503 whose commit went
// through nonetheless, retried by the client, shows as the same state
// twice in a row, never as an older one); after the outage POST answers 202
// again and the demo's setup flow resumes, without a restart of statusd.
func TestDurablePostgresOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	t.Run("restart", func(t *testing.T) { testPostgresOutage(t, (*proxy).cut) })
	t.Run("hang", func(t *testing.T) { testPostgresOutage(t, (*proxy).hang) })
}

func testPostgresOutage(t *testing.T, outage func(*proxy)) {
	dbURL := pgtest.Schema(t)
	pgtest.Pool(t, dbURL)
	u, err := pgxpool.ParseConfig(dbURL)
	require.NoError(t, err)
	px := startProxy(t, net.JoinHostPort(u.ConnConfig.Host, strconv.Itoa(int(u.ConnConfig.Port))))
	proxied := strings.Replace(dbURL, net.JoinHostPort(u.ConnConfig.Host, strconv.Itoa(int(u.ConnConfig.Port))), px.ln.Addr().String(), 1)
	require.NotEqual(t, dbURL, proxied)

	const bound = time.Second
	a := startChild(t, "--database-url", proxied, "--database-timeout", bound.String(), "--demo")
	events := stream(t, a.URL+"/events/projects?snapshot=false")

	const projects = 3
	var mu sync.Mutex
	acked := map[string]int{}
	var refused, slowest int64
	var slowestCode int
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for p := range projects {
		id := fmt.Sprintf("outage-%d", p)
		wg.Go(func() {
			for n := 0; ; {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				code, body := tryPost(client, a.URL, seqProject(id, n))
				took := time.Since(start)
				mu.Lock()
				if int64(took) > slowest {
					slowest, slowestCode = int64(took), code
				}
				switch code {
				case http.StatusAccepted:
					acked[id] = n + 1
					n++
				case http.StatusServiceUnavailable:
					refused++
					var e struct{ Error string }
					assert.NoError(t, json.Unmarshal([]byte(body), &e), "JSON body: %s", body)
					assert.NotEmpty(t, e.Error)
				default:
					t.Errorf("POST answered %d: %s", code, body)
				}
				mu.Unlock()
				if code != http.StatusAccepted {
					// The same event again: a client retries what was not
					// accepted, so order per project holds across the outage.
					time.Sleep(20 * time.Millisecond)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	outage(px)
	time.Sleep(2 * time.Second)
	px.restore()
	restored := time.Now()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("acknowledged %v; %d POSTs answered 503; slowest POST %s (%d)", acked, refused, time.Duration(slowest).Round(time.Millisecond), slowestCode)
	assert.Positive(t, refused, "POST answered 503 during the outage")
	assert.Less(t, time.Duration(slowest), bound+2*time.Second, "no POST waits much beyond --database-timeout")
	repeats := checkStreamRepeats(t, events, "outage-", acked, true)
	t.Logf("%d events repeated: answered 503, committed nonetheless, retried", repeats)
	// The demo's setup flow failed during the outage and starts again.
	demoDeadline := time.After(30 * time.Second)
	for demoAfter := false; !demoAfter; {
		select {
		case ev, ok := <-events:
			require.True(t, ok)
			demoAfter = strings.HasPrefix(ev.Data.Project.ID, "demo-") && ev.Data.Project.UpdatedAt.After(restored.Add(time.Second))
		case <-demoDeadline:
			require.FailNow(t, "the demo did not resume after the outage", a.Logs())
		}
	}
	code, body := tryPost(client, a.URL, seqProject("after-outage", 0))
	assert.Equal(t, http.StatusAccepted, code, body)
}

// With --database-url: POST /events answers 202 once the event is in the
// outbox table; GET /projects reads the database, so it survives a
// restart; the demo runs on the database; bad input is still 400.
func TestDurableAPI(t *testing.T) {
	dbURL := pgtest.Schema(t)
	pool := pgtest.Pool(t, dbURL)
	first := runStatusd(t, "--database-url", dbURL, "--demo")
	base := first.url

	p := seqProject("durable-1", 7)
	code, body := tryPost(http.DefaultClient, base, p)
	require.Equal(t, http.StatusAccepted, code, body)
	var n int
	require.NoError(t, pool.QueryRow(context.Background(),
		`SELECT count(*) FROM watermill_statusbroadcaster_outbox WHERE convert_from(decode(payload->>'payload', 'base64'), 'UTF8')::json->'project'->>'id' = 'durable-1'`).Scan(&n))
	assert.Equal(t, 1, n, "committed to the outbox when 202 is answered")

	code, body = tryPost(http.DefaultClient, base, domain.Project{ID: "bad:*"})
	assert.Equal(t, http.StatusBadRequest, code, body)

	require.Eventually(t, func() bool {
		var demo int
		err := pool.QueryRow(context.Background(), `SELECT count(*) FROM projects WHERE id LIKE 'demo-%'`).Scan(&demo)
		return err == nil && demo == 6
	}, 10*time.Second, 20*time.Millisecond, "the demo's projects are in the database")

	first.stop() // and it stopped cleanly

	// A new process on the same database: the project is still there.
	base = statusd(t, "--database-url", dbURL)
	var got []domain.Project
	resp, err := http.Get(base + "/projects")
	require.NoError(t, err)
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
	_ = resp.Body.Close()
	var found bool
	for _, g := range got {
		if g.ID == "durable-1" {
			found = true
			assert.Equal(t, p.Name, g.Name)
			assert.True(t, p.UpdatedAt.Equal(g.UpdatedAt))
		}
	}
	assert.True(t, found, "GET /projects after a restart: %v", got)
	resp, err = http.Get(base + "/projects/durable-1")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, http.StatusNotFound, status(t, base+"/projects/nope"))
}

// Without a database, statusd refuses nothing it did before; a database
// URL that does not answer stops the start with a clear error.
func TestDatabaseURLThatDoesNotAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	err = run(context.Background(), []string{"--addr", "127.0.0.1:0", "--database-url", "postgres://postgres@" + addr + "/test?connect_timeout=2"}, env(nil), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "postgres")
	assert.False(t, errors.Is(err, context.Canceled))
}

func TestDatabaseConfigFromFlagsAndEnvironment(t *testing.T) {
	cfg, err := parseConfig(nil, env(map[string]string{
		"STATUSD_DATABASE_URL":     "postgres://u@db:5432/x",
		"STATUSD_DATABASE_TIMEOUT": "2s",
		"STATUSD_OUTBOX_BATCH":     "10",
	}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "postgres://u@db:5432/x", cfg.database.url)
	assert.Equal(t, 2*time.Second, cfg.database.timeout)
	assert.Equal(t, 10, cfg.database.outboxBatch)
	cfg, err = parseConfig([]string{"--database-url", "postgres://flag"}, env(map[string]string{"STATUSD_DATABASE_URL": "postgres://env"}), io.Discard)
	require.NoError(t, err)
	assert.Equal(t, "postgres://flag", cfg.database.url, "a flag wins")
	for _, bad := range [][]string{
		{"--database-url", "postgres://x", "--database-timeout", "0s"},
		{"--database-url", "postgres://x", "--outbox-batch", "0"},
		{"--dedupe-window", "0"},
	} {
		_, err := parseConfig(bad, env(nil), io.Discard)
		assert.Error(t, err, "%q", bad)
	}
	cfg, err = parseConfig(nil, env(nil), io.Discard)
	require.NoError(t, err)
	assert.Empty(t, cfg.database.url, "in memory by default")
}

// Two durable statusd instances on one database and one Kafka, both
// forwarding (one consumer group: one active at a time). Events of each
// project are POSTed alternately to both; one instance is SIGKILLed half
// way and not restarted: the other takes over forwarding, and every
// accepted event reaches Kafka and a gateway's stream in commit order per
// project.
func TestDurableTwoInstancesForwarderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("child processes")
	}
	dbURL := pgtest.Schema(t)
	pool := pgtest.Pool(t, dbURL)
	cluster := startKfake(t, 0, t.TempDir())
	broker := cluster.ListenAddrs()[0]
	t.Cleanup(func() { cluster.Close() })
	kafka := []string{"--pubsub", "kafka", "--kafka-brokers", broker}
	gateway := statusd(t, append(kafka, "--kafka-client-id", "gateway")...)
	require.Eventually(t, func() bool { return status(t, gateway+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	events := stream(t, gateway+"/events/projects?snapshot=false")
	instances := []*httpapitest.Statusd{
		startChild(t, append(kafka, "--database-url", dbURL, "--kafka-client-id", "a", "--outbox-batch", "20")...),
		startChild(t, append(kafka, "--database-url", dbURL, "--kafka-client-id", "b", "--outbox-batch", "20")...),
	}
	for _, c := range instances {
		require.Eventually(t, func() bool { return status(t, c.URL+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	}
	const projects, each = 4, 60
	acked := map[string]int{}
	client := &http.Client{Timeout: 10 * time.Second}
	for n := range each {
		if n == each/2 {
			instances[0].Kill()
		}
		for p := range projects {
			id := fmt.Sprintf("failover-%d", p)
			target := instances[(n+p)%2]
			if n >= each/2 {
				target = instances[1]
			}
			code, body := tryPost(client, target.URL, seqProject(id, n))
			require.Equal(t, http.StatusAccepted, code, body)
			acked[id] = n + 1
		}
	}
	checkStream(t, events, "failover-", acked)
	recs := kafkaLog(t, []string{broker}, "failover-", projects*each, 30*time.Second)
	recs = kafkaLog(t, []string{broker}, "failover-", len(recs)+1, 2*time.Second) // and any repeats
	repeats := checkKafka(t, recs, acked, committedUUIDs(t, pool))
	t.Logf("%d records for %d events, %d repeats", len(recs), projects*each, repeats)
}
