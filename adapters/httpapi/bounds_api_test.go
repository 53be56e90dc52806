package httpapi_test

// Bounds of the non-stream endpoints, in process: GET /projects is written
// as it is read (same format as before: the records by id), capped in
// concurrency; a POST that arrives after the outbox closed gets 503.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// A POST that arrives once the broadcaster is closed (shutdown ran out of
// time while it was in flight) is not accepted: 503, never a 202 for an
// event that is lost.
func TestPostAfterCloseIs503(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	resp, _ := g.post(t, "application/json", envelope("before", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.bus.Close(ctx))
	resp, body := g.post(t, "application/json", envelope("after", 1, ""))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.Contains(t, body, `"error":"not accepting events`)
	assert.Contains(t, body, "broadcaster closed")
}

// GET /projects keeps its format — a JSON array of the latest record of
// every project, by id — while it is written a chunk at a time: many
// projects, one updated, one failed, across several chunks.
func TestListProjectsStreamedKeepsFormatAndOrder(t *testing.T) {
	t.Parallel()
	g := newGateway(t, nil)
	const n = 700 // more than one group of ids and one write chunk
	for i := range n {
		resp, _ := g.post(t, "application/json", envelope(fmt.Sprintf("p%04d", (i*7919)%n), 1, ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
	}
	resp, _ := g.post(t, "application/json", envelope("p0003", 2, "Mix deps.get failed"))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	want := make([]domain.Project, n)
	for i := range n {
		want[i] = project(fmt.Sprintf("p%04d", i), 1)
	}
	want[3] = project("p0003", 2)
	var got []domain.Project
	require.Eventually(t, func() bool {
		resp, body := g.get(t, "/projects")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		require.True(t, strings.HasSuffix(body, "]\n"), "one JSON array and a newline, as before")
		got = nil
		require.NoError(t, json.Unmarshal([]byte(body), &got))
		return len(got) == n && got[3].Name == want[3].Name
	}, waitFor, 10*time.Millisecond)
	for i := range want {
		require.Equal(t, want[i].ID, got[i].ID, "by id")
		require.Equal(t, want[i].Name, got[i].Name)
	}
	// The record served is exactly what json.Marshal of the project gives.
	resp, body := g.get(t, "/projects/p0003")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var one domain.Project
	require.NoError(t, json.Unmarshal([]byte(body), &one))
	wantJSON, err := json.Marshal(one)
	require.NoError(t, err)
	assert.Equal(t, string(wantJSON)+"\n", body)
}

// At most MaxListings GET /projects are served at a time; the next gets
// 503 with Retry-After and a JSON body, and a slot frees when a response
// that is not read is cut by its write deadline.
func TestListProjectsIsCappedAndCut(t *testing.T) {
	t.Parallel()
	g := newSSEGatewayWith(t, pubsub.Config{}, httpapi.Config{MaxListings: 2, WriteTimeout: 500 * time.Millisecond},
		func(l net.Listener) net.Listener { return smallBuffers{l} })
	const n = 1000 // about 1 MB of records: more than the socket buffers of a client that does not read
	for i := range n {
		bigEvent(t, g, fmt.Sprintf("p%04d", i))
	}
	g.settle(t, fmt.Sprintf("p%04d", n-1), 1)
	addr := g.srv.Listener.Addr().String()
	for range 2 {
		resp, _ := stallingGet(t, addr, "/projects")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	}
	resp, conn := stallingGet(t, addr, "/projects")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	body := make([]byte, 512)
	k, _ := io.ReadFull(resp.Body, body[:resp.ContentLength])
	assert.Contains(t, string(body[:k]), `{"error":"too many GET /projects at a time (limit 2); retry later"}`)
	_ = conn.Close()

	// The two that do not read are cut by their write deadline: a reader
	// then gets the whole array.
	require.Eventually(t, func() bool {
		resp := g.get(t, "/projects", nil)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false
		}
		var got []domain.Project
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
		require.Len(t, got, n)
		return true
	}, waitFor, 100*time.Millisecond, "the stalled responses were not cut")
}

// stallingGet sends GET path on a connection with a tiny receive buffer
// and reads only the status line and headers.
func stallingGet(t *testing.T, addr, path string) (*http.Response, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4<<10))
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), nil)
	require.NoError(t, err)
	return resp, conn
}

// A stream whose client takes each write within WriteTimeout, but its
// snapshot slower than MinRate, is ended — cleanly, between two chunks —
// after WriteTimeout plus what it was sent at MinRate; a faster client gets
// the whole snapshot. (Small socket buffers, so that what the server has
// sent is what the client has read, give or take 8 KiB.)
func TestSnapshotSlowerThanMinRateIsEnded(t *testing.T) {
	t.Parallel()
	const n = 3000 // ~3 MB of snapshot
	g := newSSEGatewayWith(t, pubsub.Config{OutboxCapacity: 2 * n}, httpapi.Config{WriteTimeout: 5 * time.Second, MinRate: 512 << 10},
		func(l net.Listener) net.Listener { return smallBuffers{l} })
	for i := range n {
		bigEvent(t, g, fmt.Sprintf("p%04d", i))
	}
	g.settle(t, fmt.Sprintf("p%04d", n-1), 1)

	fast := g.openStream(t, "/events/projects", nil)
	fast.start()
	fastFrames, _ := fast.events(n)
	require.Len(t, fastFrames, n, "a client faster than MinRate gets the whole snapshot")

	resp, conn, err := rawGet(g.srv.Listener.Addr().String(), "/events/projects", 64<<10)
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- readPaced(resp.Body, 64<<10, nil) }()
	select {
	case err := <-done:
		took := time.Since(start)
		require.NoError(t, err, "ended cleanly, with the closing chunk")
		t.Logf("a client reading its %d-event snapshot at 64 KiB/s (MinRate 512 KiB/s, WriteTimeout 5s) was ended after %s", n, took.Round(time.Millisecond))
		assert.Less(t, took, 25*time.Second)
	case <-time.After(30 * time.Second):
		_ = conn.Close()
		<-done
		t.Fatal("a client slower than MinRate was not ended within 30 s (taking it all takes 48 s)")
	}
}

// A stream whose subscription the hub ends (here: the Bus closes) while the
// client is in the middle of a long snapshot stops at its next chunk, with
// its closing chunk, rather than sending the rest of the snapshot.
func TestStreamEndedByTheHubStopsAtItsNextChunk(t *testing.T) {
	t.Parallel()
	const n = 3000 // ~3 MB of snapshot: 48 s at the client's pace
	g := newSSEGatewayWith(t, pubsub.Config{OutboxCapacity: 2 * n}, httpapi.Config{MinRate: -1},
		func(l net.Listener) net.Listener { return smallBuffers{l} })
	for i := range n {
		bigEvent(t, g, fmt.Sprintf("p%04d", i))
	}
	g.settle(t, fmt.Sprintf("p%04d", n-1), 1)
	resp, conn, err := rawGet(g.srv.Listener.Addr().String(), "/events/projects", 64<<10)
	require.NoError(t, err)
	defer conn.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	done := make(chan error, 1)
	go func() { done <- readPaced(resp.Body, 64<<10, nil) }()
	time.Sleep(time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, g.bus.Close(ctx))
	closed := time.Now()
	select {
	case err := <-done:
		require.NoError(t, err, "ended cleanly, with the closing chunk")
		t.Logf("the stream ended %s after the hub closed", time.Since(closed).Round(time.Millisecond))
	case <-time.After(waitFor):
		_ = conn.Close()
		<-done
		t.Fatal("the stream went on with its snapshot after the hub ended its subscription")
	}
}
