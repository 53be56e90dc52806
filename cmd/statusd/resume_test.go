package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi/httpapitest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// idFrame is one frame of a stream, with its SSE id.
type idFrame struct {
	ID    string
	Event domain.Event
}

// openIDStream opens an SSE stream with lastID as Last-Event-ID (if set) and
// returns its frames and a function that cuts the connection.
func openIDStream(t *testing.T, url, lastID string) (<-chan idFrame, func()) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	frames := make(chan idFrame, 10_000)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(frames)
		sc := bufio.NewScanner(resp.Body)
		var f idFrame
		var data bool
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				f.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				data = json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &f.Event) == nil
			case line == "" && data:
				frames <- f
				f, data = idFrame{}, false
			}
		}
	}()
	cut := func() {
		_ = resp.Body.Close()
		<-done
	}
	t.Cleanup(cut)
	return frames, cut
}

// nextFrames reads n frames, failing after 20 s.
func nextFrames(t *testing.T, frames <-chan idFrame, n int) []idFrame {
	t.Helper()
	var got []idFrame
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case f, ok := <-frames:
			require.True(t, ok, "stream ended after %d of %d frames", len(got), n)
			got = append(got, f)
		case <-deadline:
			require.FailNow(t, "frames missing", "%d of %d", len(got), n)
		}
	}
	return got
}

// Two statusd gateways on one broker: a client reads events from A, its
// connection is cut, events are POSTed meanwhile, and it reconnects to B
// with the id of the last event it read: exactly the events it missed, in
// order, no snapshot; for one project, several selectors and every
// project.
func TestResumeOnAnotherStatusd(t *testing.T) {
	a, b := twoGateways(t)
	const projects = 5
	project := func(i, n int) domain.Project {
		return domain.Project{ID: fmt.Sprintf("resume-%d", i), Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
			UpdatedAt: time.Date(2024, 1, 1, 12, 0, 0, n, time.UTC)}
	}
	version := func(t *testing.T, f idFrame) int {
		var n int
		_, err := fmt.Sscanf(f.Event.Project.Name, "app-%d", &n)
		require.NoError(t, err)
		return n
	}
	tests := []struct {
		name   string
		path   string
		picked []int
	}{
		{"one project", "/events/projects/resume-2", []int{2}},
		{"several selectors", "/events?topic=projects:resume-1&topic=projects:resume-3&topic=projects:resume-4", []int{1, 3, 4}},
		{"every project", "/events/projects", []int{0, 1, 2, 3, 4}},
	}
	v := 0 // the versions posted so far, across subtests
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			postRound := func(gateway string) {
				v++
				for i := range projects {
					post(t, gateway, project(i, v))
				}
			}
			barrier, _ := openIDStream(t, b+"/events/projects?snapshot=false", "")
			sep := "?"
			if strings.Contains(tt.path, "?") {
				sep = "&"
			}
			onA, cut := openIDStream(t, a+tt.path+sep+"snapshot=false", "")
			postRound(a)
			postRound(a)
			read := nextFrames(t, onA, 2*len(tt.picked))
			lastID := read[len(read)-1].ID
			assert.True(t, strings.HasPrefix(lastID, "k"), "a position in the topic: %q", lastID)
			cut()
			missedFrom := v + 1
			// Posted to B: one producer, so the project's events are in
			// the log in the order they were posted.
			postRound(b)
			postRound(b)
			postRound(b)
			nextFrames(t, barrier, 5*projects) // B has read everything

			resumed, _ := openIDStream(t, b+tt.path, lastID)
			got := nextFrames(t, resumed, 3*len(tt.picked))
			next := map[string]int{}
			for _, i := range tt.picked {
				next[fmt.Sprintf("resume-%d", i)] = missedFrom
			}
			for _, f := range got {
				id := f.Event.Project.ID
				require.Contains(t, next, id, "only the projects selected")
				require.Equal(t, next[id], version(t, f), "project %s: exactly the next missed event, no snapshot", id)
				next[id]++
			}
			select {
			case f := <-resumed:
				assert.Failf(t, "more than the missed events", "%+v", f)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

// One gateway restarted (statusd as a child process, SIGTERM): with
// --kafka-initial-offset oldest it reads the topic again, and a client
// resumes on it from an id it got before the restart: exactly the events
// it missed, no snapshot.
func TestResumeAfterARestart(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, pubsub.DefaultTopic))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	gatewayArgs := []string{"--pubsub", "kafka", "--kafka-brokers", cluster.ListenAddrs()[0], "--kafka-initial-offset", "oldest", "--kafka-client-id", "gateway-a"}
	a := startChild(t, gatewayArgs...)
	b := startChild(t, "--pubsub", "kafka", "--kafka-brokers", cluster.ListenAddrs()[0], "--kafka-client-id", "gateway-b")
	for _, g := range []*httpapitest.Statusd{a, b} {
		require.Eventually(t, func() bool { return status(t, g.URL+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	}
	const projects = 4
	project := func(i, n int) domain.Project {
		return domain.Project{ID: fmt.Sprintf("restart-%d", i), Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
			UpdatedAt: time.Date(2024, 1, 1, 12, 0, 0, n, time.UTC)}
	}
	postRound := func(base string, n int) {
		for i := range projects {
			post(t, base, project(i, n))
		}
	}
	onA, cut := openIDStream(t, a.URL+"/events/projects?snapshot=false", "")
	postRound(a.URL, 1)
	postRound(a.URL, 2)
	read := nextFrames(t, onA, 2*projects)
	lastID := read[len(read)-1].ID
	cut()

	require.NoError(t, a.Stop(syscall.SIGTERM, 20*time.Second), "statusd exits 0 on SIGTERM")
	postRound(b.URL, 3)
	postRound(b.URL, 4)

	restarted := startChild(t, gatewayArgs...)
	require.Eventually(t, func() bool {
		resp, err := http.Get(restarted.URL + fmt.Sprintf("/projects/restart-%d", projects-1))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var p domain.Project
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&p) == nil && p.Name == "app-4"
	}, 20*time.Second, 20*time.Millisecond, "the restarted gateway reads the topic again")

	resumed, _ := openIDStream(t, restarted.URL+"/events/projects", lastID)
	next := map[string]int{}
	for _, f := range nextFrames(t, resumed, 2*projects) {
		id := f.Event.Project.ID
		n, ok := next[id]
		if !ok {
			n = 3
		}
		require.Equal(t, fmt.Sprintf("app-%d", n), f.Event.Project.Name, "project %s: exactly the next missed event, no snapshot", id)
		next[id] = n + 1
	}
	assert.Len(t, next, projects)
	select {
	case f := <-resumed:
		assert.Failf(t, "more than the missed events", "%+v", f)
	case <-time.After(300 * time.Millisecond):
	}
}

// A gateway restarted on the newest offsets (the default) fills its
// history from the tail of the topic before it is ready, and resumes a
// client from an id it got before the restart.
func TestResumeAfterARestartOnTheNewestOffsets(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, pubsub.DefaultTopic))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	gatewayArgs := []string{"--pubsub", "kafka", "--kafka-brokers", cluster.ListenAddrs()[0], "--kafka-client-id", "gateway-a"}
	a := startChild(t, gatewayArgs...)
	require.Eventually(t, func() bool { return status(t, a.URL+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	project := func(i, n int) domain.Project {
		return domain.Project{ID: fmt.Sprintf("newest-%d", i), Name: fmt.Sprintf("app-%d", n), Status: domain.StatusCompiling,
			UpdatedAt: time.Date(2024, 1, 1, 12, 0, 0, n, time.UTC)}
	}
	const projects = 4
	onA, cut := openIDStream(t, a.URL+"/events/projects?snapshot=false", "")
	for n := 1; n <= 4; n++ {
		for i := range projects {
			post(t, a.URL, project(i, n))
		}
	}
	read := nextFrames(t, onA, 4*projects)
	lastID := read[2*projects-1].ID // the client read half of them, then its connection broke
	missed := map[string][]string{} // what followed on A, per project
	for _, f := range read[2*projects:] {
		missed[f.Event.Project.ID] = append(missed[f.Event.Project.ID], f.Event.Project.Name)
	}
	cut()
	require.NoError(t, a.Stop(syscall.SIGTERM, 20*time.Second), "statusd exits 0 on SIGTERM")

	restarted := startChild(t, gatewayArgs...)
	require.Eventually(t, func() bool { return status(t, restarted.URL+"/readyz") == http.StatusOK }, 20*time.Second, 20*time.Millisecond)
	resumed, _ := openIDStream(t, restarted.URL+"/events/projects", lastID)
	got := map[string][]string{}
	for _, f := range nextFrames(t, resumed, 2*projects) {
		got[f.Event.Project.ID] = append(got[f.Event.Project.ID], f.Event.Project.Name)
	}
	assert.Equal(t, missed, got, "exactly the events that followed the id on A, in order per project, no snapshot")
	select {
	case f := <-resumed:
		assert.Failf(t, "more than the missed events", "%+v", f)
	case <-time.After(300 * time.Millisecond):
	}
}

// twoGateways starts two statusd gateways (in process) on one kfake
// broker with a 3-partition topic, and returns their URLs once both are
// ready.
func twoGateways(t *testing.T) (string, string) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, pubsub.DefaultTopic))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	kafkaArgs := []string{"--pubsub", "kafka", "--kafka-brokers", cluster.ListenAddrs()[0]}
	a := statusd(t, append(kafkaArgs, "--kafka-client-id", "gateway-a")...)
	b := statusd(t, append(kafkaArgs, "--kafka-client-id", "gateway-b")...)
	for _, g := range []string{a, b} {
		require.Eventually(t, func() bool { return status(t, g+"/readyz") == http.StatusOK }, 10*time.Second, 20*time.Millisecond)
	}
	return a, b
}
