package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// The HTTP drain and the outbox's flush each get their share of
// --shutdown-timeout. A client stalled in the middle of its POST body
// holds the drain for its whole share (half) at most: its connection is
// closed then (or earlier, by a request-body read deadline). The outbox, whose publish takes 3s (a slow broker),
// still flushes the event accepted just before the signal, within the
// timeout, and the shutdown is clean. (The drain used to take the whole
// timeout, and the shutdown was logged as unclean; the outbox had only
// what the drain left.)
func TestShutdownGivesTheOutboxItsShareDespiteAStalledPOST(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, pubsub.DefaultTopic))
	require.NoError(t, err)
	defer cluster.Close()
	var slow atomic.Bool
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		if slow.Load() {
			cluster.SleepControl(func() { time.Sleep(3 * time.Second) })
		}
		return nil, nil, false
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--addr", "127.0.0.1:0", "--pubsub", "kafka", "--kafka-brokers", cluster.ListenAddrs()[0],
			"--shutdown-timeout", "4s"}, env(nil), logs)
	}()
	url := waitForURL(t, logs.String)
	require.Eventually(t, func() bool { return status(t, url+"/readyz") == http.StatusOK }, 10*time.Second, 20*time.Millisecond)

	// A client sends its headers and half its body, then stalls.
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"event\":")
	require.NoError(t, err)

	slow.Store(true)
	post(t, url, postedProject(0, 1)) // accepted: 202; its publish takes 3s
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "logs:\n%s", logs.String())
	case <-time.After(10 * time.Second):
		require.FailNow(t, "statusd did not stop", "logs:\n%s", logs.String())
	}
	took := time.Since(start)
	t.Logf("stopped %s after the signal", took.Round(time.Millisecond))
	assert.NotContains(t, logs.String(), "unclean shutdown", "the accepted event was published")
	assert.Less(t, took, 5*time.Second, "within the shutdown timeout (4s) and the README's 5s")

	// The stalled client's connection was closed.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, conn)
	assert.NoError(t, err, "closed by the server (EOF), not left open")

	// The event is on the topic.
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(pubsub.DefaultTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	fetchCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	fs := cl.PollFetches(fetchCtx)
	require.NoError(t, fetchCtx.Err(), "the event was published")
	var values [][]byte
	fs.EachRecord(func(r *kgo.Record) { values = append(values, r.Value) })
	require.Len(t, values, 1)
	assert.True(t, bytes.Contains(values[0], []byte(`"id":"posted-0"`)))
}

// --kafka-partition-check 0 is an error (kafka.Config would take it
// as "the default", 1m), and the help text says what the check does.
func TestKafkaPartitionCheckFlag(t *testing.T) {
	base := []string{"--pubsub", "kafka", "--kafka-brokers", "kafka:9092"}
	_, err := parseConfig(append(base, "--kafka-partition-check", "0"), env(nil), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--kafka-partition-check 0")
	_, err = parseConfig(base, env(map[string]string{"STATUSD_KAFKA_PARTITION_CHECK": "0s"}), io.Discard)
	require.Error(t, err)
	for arg, want := range map[string]time.Duration{"30s": 30 * time.Second, "-1s": -time.Second} {
		c, err := parseConfig(append(base, "--kafka-partition-check", arg), env(nil), io.Discard)
		require.NoError(t, err)
		kc, err := c.kafka.config()
		require.NoError(t, err)
		assert.Equal(t, want, kc.PartitionCheck)
	}
	var help bytes.Buffer
	_, err = parseConfig([]string{"-h"}, env(nil), &help)
	require.ErrorIs(t, err, flag.ErrHelp)
	assert.Contains(t, help.String(), "reads the new ones from their oldest offset. Negative: never; 0 is an error")
	assert.NotContains(t, help.String(), "re-read")
}

// An outbox forwarder that does not stop (its database hangs) gets its
// share of --shutdown-timeout and no more: the pub/sub still closes, and
// shutdown returns within the timeout (plus Close's half second of grace),
// saying that the shutdown was unclean.
func TestShutdownBoundsAForwarderThatDoesNotStop(t *testing.T) {
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	hung := make(chan struct{})
	defer close(hung)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	start := time.Now()
	shutdown(&http.Server{}, nil, func() error { <-hung; return nil }, bus, time.Second, logger)
	took := time.Since(start)
	assert.Less(t, took, 3*time.Second, "bounded by --shutdown-timeout (1s, plus the pub/sub's grace and a loaded machine), not by the forwarder")
	assert.GreaterOrEqual(t, took, 700*time.Millisecond, "the forwarder had its share (3/4 of the timeout)")
	assert.Contains(t, logs.String(), "outbox forwarder did not stop within its share")
	assert.NotContains(t, logs.String(), "msg=stopped")
}
