package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// requireJSONError asserts a JSON error response with status.
func requireJSONError(t *testing.T, resp *http.Response, body string, status int) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var e struct {
		Error string `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &e), body)
	require.NotEmpty(t, e.Error)
}

func TestPostEventIsBroadcastToTheStream(t *testing.T) {
	g := newGateway(t, nil)
	s := g.openStream(t, "/events/projects/p1", nil)

	resp, body := g.post(t, "application/json", envelope("p1", 1, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	assert.JSONEq(t, `{"topic":"projects:p1"}`, body)
	ev := s.next()
	assert.Equal(t, "project_updated", ev.Event)
	assert.JSONEq(t, envelope("p1", 1, ""), ev.Data, "the envelope arrives exactly as posted")
	assert.NotEmpty(t, ev.ID)

	resp, body = g.post(t, "application/json; charset=utf-8", envelope("p1", 2, "Mix deps.get failed"))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	ev2 := s.next()
	assert.Equal(t, "project_error", ev2.Event)
	assert.JSONEq(t, envelope("p1", 2, "Mix deps.get failed"), ev2.Data)
	assert.NotEqual(t, ev.ID, ev2.ID, "ids are unique")
}

func TestPostEventRejectsBadInput(t *testing.T) {
	g := newGateway(t, nil)
	cases := []struct {
		name, ct, body string
		status         int
	}{
		{"malformed JSON", "application/json", `{"event":`, http.StatusBadRequest},
		{"not an object", "application/json", `[1,2]`, http.StatusBadRequest},
		{"unknown event type", "application/json", strings.Replace(envelope("p", 1, ""), "project_updated", "project_deleted", 1), http.StatusBadRequest},
		{"missing event type", "application/json", `{"project":{"id":"p","status":"ready"}}`, http.StatusBadRequest},
		{"missing project", "application/json", `{"event":"project_updated"}`, http.StatusBadRequest},
		{"missing project id", "application/json", `{"event":"project_updated","project":{"status":"ready"}}`, http.StatusBadRequest},
		{"invalid project id", "application/json", envelope("a:b", 1, ""), http.StatusBadRequest},
		{"wildcard as id", "application/json", envelope("*", 1, ""), http.StatusBadRequest},
		{"project_error without error", "application/json", `{"event":"project_error","project":{"id":"p","status":"failed"}}`, http.StatusBadRequest},
		{"project_error with empty error", "application/json", `{"event":"project_error","project":{"id":"p","status":"failed"},"error":""}`, http.StatusBadRequest},
		{"project_updated with error", "application/json", `{"event":"project_updated","project":{"id":"p","status":"ready"},"error":"x"}`, http.StatusBadRequest},
		{"status not a lower-case word", "application/json", `{"event":"project_updated","project":{"id":"p","status":"Ready"}}`, http.StatusBadRequest},
		{"unknown field", "application/json", `{"event":"project_updated","project":{"id":"p","status":"ready"},"extra":1}`, http.StatusBadRequest},
		{"trailing data", "application/json", envelope("p", 1, "") + "{}", http.StatusBadRequest},
		{"body over 64 KiB", "application/json", `{"event":"project_updated","project":{"id":"p","status":"ready","name":"` + strings.Repeat("x", 64<<10) + `"}}`, http.StatusRequestEntityTooLarge},
		{"not JSON content type", "text/plain", envelope("p", 1, ""), http.StatusUnsupportedMediaType},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := g.post(t, c.ct, c.body)
			requireJSONError(t, resp, body, c.status)
		})
	}
	_, body := g.get(t, "/projects")
	assert.JSONEq(t, `[]`, body, "nothing was broadcast")
}

func TestPostEventJustUnderTheLimitIsAccepted(t *testing.T) {
	g := newGateway(t, nil)
	base := envelope("p", 1, "")
	pad := (64 << 10) - len(base)
	body := strings.Replace(base, `"name":"app-1"`, `"name":"`+strings.Repeat("x", pad+len("app-1"))+`"`, 1)
	require.Len(t, body, 64<<10)
	resp, out := g.post(t, "application/json", body)
	assert.Equal(t, http.StatusAccepted, resp.StatusCode, out)
}

func TestStreamSelectorsAreValidated(t *testing.T) {
	g := newGateway(t, nil)
	many := "/events?" + strings.Repeat("topic=projects:*&", 51)
	for _, path := range []string{
		"/events/projects/a:b",
		"/events/projects/" + strings.Repeat("x", 129),
		"/events",
		"/events?topic=",
		"/events?topic=projects:",
		"/events?topic=projects:a*",
		"/events?topic=project:a",
		"/events?topic=projects:ok&topic=nope",
		many,
		"/events/projects?snapshot=maybe",
	} {
		t.Run(path[:min(len(path), 40)], func(t *testing.T) {
			resp, body := g.get(t, path)
			requireJSONError(t, resp, body, http.StatusBadRequest)
		})
	}
	assert.Zero(t, g.api.OpenStreams())
}

func TestProjectStreamGetsOnlyItsProject(t *testing.T) {
	g := newGateway(t, nil)
	s := g.openStream(t, "/events/projects/a", nil)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("b", 1)))
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("a", 2)))
	ev := s.next()
	assert.Contains(t, ev.Data, `"id":"a"`)
	s.quiet(100 * time.Millisecond)
}

func TestWildcardStreamGetsEveryProject(t *testing.T) {
	g := newGateway(t, nil)
	s := g.openStream(t, "/events/projects", nil)
	for _, id := range []string{"a", "b", "c"} {
		require.NoError(t, g.bus.BroadcastProjectUpdate(project(id, 1)))
	}
	for _, id := range []string{"a", "b", "c"} {
		assert.Contains(t, s.next().Data, `"id":"`+id+`"`)
	}
}

func TestMultiSelectorStreamSendsEachEventOnce(t *testing.T) {
	g := newGateway(t, nil)
	s := g.openStream(t, "/events?topic=projects:a&topic=projects:*&topic=projects:a&topic=projects:b", nil)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("a", 1)))
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("c", 2)))
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("end", 3)))
	var ids []string
	for {
		ev := s.next()
		var env struct {
			Project struct{ ID string } `json:"project"`
		}
		require.NoError(t, json.Unmarshal([]byte(ev.Data), &env))
		if env.Project.ID == "end" {
			break
		}
		ids = append(ids, env.Project.ID)
	}
	assert.Equal(t, []string{"a", "c"}, ids, "a matches two selectors but arrives once")

	only := g.openStream(t, "/events?topic=projects:a&topic=projects:b&snapshot=false", nil)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("c", 4)))
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("b", 5)))
	assert.Contains(t, only.next().Data, `"id":"b"`)
}

// Every event broadcast after the client has the 200 reaches it: the
// stream is registered before the headers are flushed.
func TestEventsAfterTheResponseHeadersAreNeverMissed(t *testing.T) {
	g := newGateway(t, nil)
	for i := range 50 {
		s := g.openStream(t, "/events/projects/race?snapshot=false", nil)
		require.NoError(t, g.bus.BroadcastProjectUpdate(project("race", i)))
		assert.Contains(t, s.next().Data, `"name":"app-`+strconv.Itoa(i)+`"`)
		s.close()
	}
}

func TestSSEFramesAndHeaders(t *testing.T) {
	g := newGateway(t, nil)
	s := g.openStream(t, "/events/projects", nil)
	assert.Equal(t, "no-cache", s.resp.Header.Get("Cache-Control"))
	assert.Equal(t, "no", s.resp.Header.Get("X-Accel-Buffering"))
	first := <-s.frames
	assert.Equal(t, "2000", first.Retry, "each stream starts with a retry hint")

	require.NoError(t, g.bus.BroadcastProjectUpdate(project("a", 1)))
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("a", 2)))
	e1, e2 := s.next(), s.next()
	assert.Equal(t, "project_updated", e1.Event)
	assert.NotEqual(t, e1.ID, e2.ID)
	var env map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(e1.Data), &env))
	assert.Len(t, env, 2, "project_updated has exactly event and project, no error key")
}

func TestLatestProjectQueries(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, "/projects")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	assert.JSONEq(t, `[]`, body)

	resp, body = g.get(t, "/projects/nobody")
	requireJSONError(t, resp, body, http.StatusNotFound)
	resp, body = g.get(t, "/projects/a:b")
	requireJSONError(t, resp, body, http.StatusBadRequest)

	s := g.openStream(t, "/events/projects?snapshot=false", nil)
	for _, b := range []string{envelope("b", 1, ""), envelope("a", 1, ""), envelope("b", 2, "Mix deps.get failed")} {
		resp, out := g.post(t, "application/json", b)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, out)
	}
	for range 3 {
		s.next()
	}
	_, body = g.get(t, "/projects")
	var list []map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &list))
	require.Len(t, list, 2)
	assert.Equal(t, "a", list[0]["id"])
	assert.Equal(t, "b", list[1]["id"])
	assert.Equal(t, "failed", list[1]["status"], "the latest state")
	assert.Equal(t, "app-2", list[1]["name"])

	resp, body = g.get(t, "/projects/b")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var env struct {
		Project json.RawMessage `json:"project"`
	}
	require.NoError(t, json.Unmarshal([]byte(envelope("b", 2, "x")), &env))
	assert.JSONEq(t, string(env.Project), body)
}

func TestHealthReadinessAndMetrics(t *testing.T) {
	g := newGateway(t, nil)
	resp, _ := g.get(t, "/healthz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = g.get(t, "/readyz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	s := g.openStream(t, "/events/projects", nil)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("a", 1)))
	s.next()
	want := []string{
		`statusbroadcaster_events_broadcast_total{event="project_updated"} 1`,
		`statusbroadcaster_events_published_total 1`,
		`statusbroadcaster_events_delivered_total 1`,
		`statusbroadcaster_events_failed_total 0`,
		`statusbroadcaster_sse_open_streams 1`,
		`statusbroadcaster_outbox_queue_depth 0`,
		`statusbroadcaster_sse_delivery_delay_seconds_count 1`,
	}
	// The stream may get the event before the counters move: the hub
	// counts deliveries once it has queued the event for every
	// subscriber, and the outbox counts the publish once gochannel's
	// Publish has seen the router handler's ack.
	var body string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var resp *http.Response
		resp, body = g.get(t, "/metrics")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, resp.Header.Get("Content-Type"), "text/plain")
		if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(body, w) }) || time.Now().After(deadline) {
			break
		}
	}
	for _, w := range want {
		assert.Contains(t, body, w)
	}

	// A snapshot is not a live event: it is not counted as delayed.
	late := g.openStream(t, "/events/projects", nil)
	assert.Contains(t, late.next().Data, `"id":"a"`, "the snapshot")
	_, body = g.get(t, "/metrics")
	assert.Contains(t, body, `statusbroadcaster_sse_delivery_delay_seconds_count 1`)
}

func TestReadinessFollowsThePubSub(t *testing.T) {
	ready := errors.New("broker unreachable")
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) {
		c.Ready = func(context.Context) error { return ready }
	})
	resp, body := g.get(t, "/readyz")
	requireJSONError(t, resp, body, http.StatusServiceUnavailable)
	assert.Contains(t, body, "broker unreachable")
	ready = nil
	resp, _ = g.get(t, "/readyz")
	assert.Equal(t, http.StatusOK, resp.StatusCode)

	// A Bus is not ready before its router runs, nor after Close.
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	require.NoError(t, bus.Close(context.Background()))
	assert.Error(t, bus.Ready(context.Background()))
}

func TestUnknownRoutesAndMethodsAnswerJSON(t *testing.T) {
	g := newGateway(t, nil)
	resp, body := g.get(t, "/nope")
	requireJSONError(t, resp, body, http.StatusNotFound)
	req, _ := http.NewRequest(http.MethodDelete, g.srv.URL+"/projects", nil)
	resp, err := g.srv.Client().Do(req)
	require.NoError(t, err)
	requireJSONError(t, resp, readBody(t, resp), http.StatusMethodNotAllowed)
	assert.Contains(t, resp.Header.Get("Allow"), "GET")
}

func TestCloseStreamsEndsOpenStreams(t *testing.T) {
	g := newGateway(t, nil)
	s := g.openStream(t, "/events/projects", nil)
	require.Eventually(t, func() bool { return g.api.OpenStreams() == 1 }, 5*time.Second, time.Millisecond)
	g.api.CloseStreams()
	for range s.frames {
	}
	require.Eventually(t, func() bool { return g.api.OpenStreams() == 0 }, 5*time.Second, time.Millisecond)
	resp, body := g.get(t, "/events/projects")
	requireJSONError(t, resp, body, http.StatusServiceUnavailable)
}
