package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub/pubsubtest"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestKafkaConfigFromFlagsAndEnvironment(t *testing.T) {
	c, err := parseConfig([]string{"--pubsub", "kafka", "--kafka-brokers", "k1:9092, k2:9092"}, env(nil), io.Discard)
	require.NoError(t, err)
	kc, err := c.kafka.config()
	require.NoError(t, err)
	assert.Equal(t, []string{"k1:9092", "k2:9092"}, kc.Brokers)
	assert.Equal(t, pubsub.DefaultTopic, kc.Topic, "the core's physical topic by default")
	assert.Equal(t, "statusd", kc.ClientID)
	assert.Equal(t, kafka.OffsetNewest, kc.InitialOffset)
	assert.Empty(t, kc.ConsumerGroup, "a gateway consumes every partition, without a group")
	assert.Nil(t, kc.TLS)
	assert.Nil(t, kc.SASL)

	c, err = parseConfig([]string{"--kafka-client-id", "gw-2"}, env(map[string]string{
		"STATUSD_PUBSUB": "kafka", "STATUSD_KAFKA_BROKERS": "kafka:9092", "STATUSD_KAFKA_TOPIC": "project-events",
		"STATUSD_KAFKA_CLIENT_ID": "gw-1", "STATUSD_KAFKA_INITIAL_OFFSET": "oldest", "STATUSD_KAFKA_TLS": "true",
		"STATUSD_KAFKA_SASL_USER": "statusd", "STATUSD_KAFKA_SASL_PASSWORD": "secret",
	}), io.Discard)
	require.NoError(t, err)
	kc, err = c.kafka.config()
	require.NoError(t, err)
	assert.Equal(t, []string{"kafka:9092"}, kc.Brokers)
	assert.Equal(t, "project-events", kc.Topic)
	assert.Equal(t, "gw-2", kc.ClientID, "a flag wins over the environment")
	assert.Equal(t, kafka.OffsetOldest, kc.InitialOffset)
	require.NotNil(t, kc.TLS)
	assert.False(t, kc.TLS.InsecureSkipVerify)
	assert.Equal(t, &kafka.SASLConfig{User: "statusd", Password: "secret"}, kc.SASL)

	noPEM := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(noPEM, []byte("not a certificate"), 0o600))
	for _, bad := range [][]string{
		{"--pubsub", "kafka"}, // no brokers
		{"--pubsub", "kafka", "--kafka-brokers", "kafka"},
		{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092", "--kafka-initial-offset", "latest"},
		{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092", "--kafka-topic", "projects:*"},
		{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092", "--kafka-version", "next"},
		{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092", "--kafka-sasl-password", "secret"},
		{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092", "--kafka-tls-ca", noPEM},
		{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092", "--kafka-tls-ca", noPEM + ".missing"},
	} {
		_, err := parseConfig(bad, env(nil), io.Discard)
		assert.Error(t, err, "%q", bad)
	}
}

// statusd runs the service in-process with args, and stops it at the end
// of the test. It returns its base URL.
func statusd(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), env(nil), logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Errorf("statusd did not stop; logs:\n%s", logs.String())
		}
	})
	return waitForURL(t, logs.String)
}

// sseEvent is one frame of a stream.
type sseEvent struct {
	Event string
	Data  domain.Event
}

// stream opens an SSE stream and returns its events; it is closed at the
// end of the test.
func stream(t *testing.T, url string) <-chan sseEvent {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := make(chan sseEvent, 10_000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Data); err != nil {
					t.Errorf("bad data line %q: %v", line, err)
				}
			case line == "" && ev.Event != "":
				events <- ev
				ev = sseEvent{}
			}
		}
	}()
	t.Cleanup(func() {
		_ = resp.Body.Close()
		<-done
	})
	return events
}

func post(t *testing.T, base string, p domain.Project) {
	t.Helper()
	body, err := json.Marshal(domain.Event{Type: domain.EventProjectUpdated, Project: p})
	require.NoError(t, err)
	resp, err := http.Post(base+"/events", "application/json", strings.NewReader(string(body)))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
}

func status(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func postedProject(gateway, n int) domain.Project {
	return domain.Project{ID: fmt.Sprintf("posted-%d", gateway), Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
		UpdatedAt: time.Date(2024, 1, 1, 12, 0, 0, n, time.UTC)}
}

// collectPosted reads a stream until it has the posted events [from, to) of
// every gateway, checking that each arrives once, in order. Other events
// (the demo's) are recorded per project in seen.
func collectPosted(t *testing.T, s <-chan sseEvent, gateways, from, to int, seen map[string][]domain.Project) {
	t.Helper()
	next := make([]int, gateways)
	for g := range next {
		next[g] = from
	}
	timeout := time.After(30 * time.Second)
	for {
		done := true
		for _, n := range next {
			done = done && n == to
		}
		if done {
			return
		}
		select {
		case ev, ok := <-s:
			require.True(t, ok, "the stream ended")
			id := ev.Data.Project.ID
			var g int
			if _, err := fmt.Sscanf(id, "posted-%d", &g); err != nil {
				seen[id] = append(seen[id], ev.Data.Project)
				continue
			}
			require.Equal(t, postedProject(g, next[g]).Name, ev.Data.Project.Name, "project %s: missing, duplicated or out of order", id)
			next[g]++
		case <-timeout:
			require.FailNow(t, "events missing", "still waiting for posted events %v of [%d, %d)", next, from, to)
		}
	}
}

// Two statusd gateways on one broker: an event POSTed to either reaches the
// streams of both. The broker then stops while the demo runs on one of
// them: broadcasting goes on (the setup flow completes), /readyz says 503,
// and once the broker is back on the same port with the same data, every
// event broadcast during the outage reaches both streams, in order.
func TestTwoGatewaysOnOneBrokerThroughAnOutage(t *testing.T) {
	dir := t.TempDir()
	var cluster *kfake.Cluster
	start := func(port int) {
		var err error
		cluster, err = kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(dir),
			kfake.SeedTopics(3, pubsub.DefaultTopic))
		require.NoError(t, err)
	}
	start(0)
	t.Cleanup(func() { cluster.Close() }) // runs after the gateways stop
	broker := cluster.ListenAddrs()[0]
	_, portText, _ := net.SplitHostPort(broker)
	port, err := strconv.Atoi(portText)
	require.NoError(t, err)

	kafka := []string{"--pubsub", "kafka", "--kafka-brokers", broker}
	gateways := []string{
		statusd(t, append(kafka, "--demo", "--kafka-client-id", "gateway-a")...),
		statusd(t, append(kafka, "--kafka-client-id", "gateway-b")...),
	}
	for _, g := range gateways {
		require.Eventually(t, func() bool { return status(t, g+"/readyz") == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
	}
	var streams []<-chan sseEvent
	seen := make([]map[string][]domain.Project, len(gateways)) // the demo's events, per stream and project
	for i, g := range gateways {
		streams = append(streams, stream(t, g+"/events/projects?snapshot=false"))
		seen[i] = map[string][]domain.Project{}
	}

	const before, outage = 5, 30
	for n := range before {
		for i, g := range gateways {
			post(t, g, postedProject(i, n))
		}
	}
	for i, s := range streams {
		collectPosted(t, s, len(gateways), 0, before, seen[i])
	}

	cluster.Close()
	for _, g := range gateways {
		require.Eventually(t, func() bool { return status(t, g+"/readyz") == http.StatusServiceUnavailable }, 10*time.Second, 20*time.Millisecond,
			"/readyz says 503 while the broker is down")
	}
	broadcasts := func() float64 {
		return metric(t, gateways[0], `statusbroadcaster_events_broadcast_total{event="project_updated"}`)
	}
	demoBefore := broadcasts()
	for n := before; n < before+outage; n++ {
		for i, g := range gateways {
			post(t, g, postedProject(i, n)) // 202 at once, broker or not
		}
	}
	require.Eventually(t, func() bool { return broadcasts() >= demoBefore+outage+5 }, 20*time.Second, 50*time.Millisecond,
		"the demo's setup flow goes on broadcasting while the broker is down")

	for _, g := range gateways {
		require.Eventually(t, func() bool { return metric(t, g, "statusbroadcaster_events_failed_total") > 0 }, 20*time.Second, 50*time.Millisecond,
			"publishing fails while the broker is down (and is retried)")
	}

	start(port)
	for i, s := range streams {
		collectPosted(t, s, len(gateways), before, before+outage, seen[i])
	}
	for _, g := range gateways {
		require.Eventually(t, func() bool { return status(t, g+"/readyz") == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
	}
	// The demo's events, as each stream saw them: every project in order
	// (updated_at never goes back), the same sequence on both gateways as
	// far as both have read.
	require.NotEmpty(t, seen[0])
	for id, a := range seen[0] {
		for i := 1; i < len(a); i++ {
			assert.False(t, a[i].UpdatedAt.Before(a[i-1].UpdatedAt), "demo project %s out of order on gateway a", id)
		}
		// The streams opened one after the other, so one of them may have
		// missed the first events of a demo project; each stream was read
		// until the posted events were in, so a demo project on another
		// partition may be further along on one of them. Compare where
		// both have read.
		b := seen[1][id]
		if len(a) > 0 && len(b) > 0 {
			if i := slices.Index(a, b[0]); i > 0 {
				a = a[i:]
			} else if j := slices.Index(b, a[0]); j > 0 {
				b = b[j:]
			}
		}
		if n := min(len(a), len(b)); n > 0 {
			assert.Equal(t, a[:n], b[:n], "demo project %s: both gateways stream the same events", id)
		}
	}
}

// metric returns the value of one sample line of /metrics, 0 when absent.
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(t, err)
			return f
		}
	}
	return 0
}

// With a broker that accepts connections and never answers, statusd still
// stops within the README's 5 seconds of SIGTERM (it took 28s: closing the
// pub/sub waited out Sarama's timeouts). With nothing queued the shutdown
// is clean; with events that cannot be published it is unclean, logged,
// and still ends with exit status 0 at the shutdown timeout.
func TestKafkaShutdownWithHungBroker(t *testing.T) {
	for _, tc := range []struct {
		name    string
		queue   bool
		args    []string
		limit   time.Duration
		logLine string
	}{
		{"nothing queued, default shutdown timeout", false, nil, 5 * time.Second, "stopped"},
		{"an event queued", true, []string{"--shutdown-timeout", "1s"}, 3 * time.Second, "unclean shutdown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broker := pubsubtest.NewHungBroker(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logs := &syncBuffer{}
			done := make(chan error, 1)
			args := append([]string{"--addr", "127.0.0.1:0", "--pubsub", "kafka", "--kafka-brokers", broker.Addr()}, tc.args...)
			go func() { done <- run(ctx, args, env(nil), logs) }()
			url := waitForURL(t, logs.String)
			require.Eventually(t, func() bool { return broker.Accepted() > 0 }, 5*time.Second, 5*time.Millisecond,
				"statusd tries the broker")
			assert.Equal(t, http.StatusServiceUnavailable, status(t, url+"/readyz"))
			if tc.queue {
				post(t, url, postedProject(0, 1))
			}

			start := time.Now()
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "exit status 0; logs:\n%s", logs.String())
				t.Logf("stopped %s after the signal", time.Since(start).Round(time.Millisecond))
			case <-time.After(tc.limit):
				require.FailNow(t, "statusd did not stop in time", "limit %s; logs:\n%s", tc.limit, logs.String())
			}
			assert.Contains(t, logs.String(), tc.logLine)
			assert.NotContains(t, logs.String(), "abandoned")
		})
	}
}
