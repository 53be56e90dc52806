package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The load program against a real gateway on loopback, small: every reader
// gets every event it selected, in order, and the report says so.
func TestLoadAgainstAGateway(t *testing.T) {
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	api := httpapi.New(httpapi.Config{}, bus, nil)
	srv := httptest.NewServer(api)
	defer func() {
		api.CloseStreams()
		srv.Close()
		require.NoError(t, bus.Close(context.Background()))
	}()

	var out bytes.Buffer
	err = run(options{url: srv.URL, clients: 6, stalled: 1, events: 300, projects: 5, payload: 512, posters: 2, timeout: 30 * time.Second}, &out)
	require.NoError(t, err, out.String())
	assert.Contains(t, out.String(), "missing 0, out of order 0")
	assert.Contains(t, out.String(), "posted 300 events")
}

func TestOptionsAreChecked(t *testing.T) {
	assert.Error(t, run(options{events: 0, projects: 1, posters: 1}, &bytes.Buffer{}))
	assert.Error(t, run(options{events: 1, projects: 1, posters: 1, timeout: time.Second}, &bytes.Buffer{}), "neither --url nor --statusd")
}

// The comparison's scenarios against a real gateway on loopback, small:
// every reader gets every event it selected, in order, stalled client
// included.
func TestScenariosAgainstAGateway(t *testing.T) {
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	require.NoError(t, err)
	api := httpapi.New(httpapi.Config{}, bus, nil)
	ts := httptest.NewServer(api)
	defer func() {
		api.CloseStreams()
		ts.Close()
		require.NoError(t, bus.Close(context.Background()))
	}()
	srv := &server{name: "statusd", base: ts.URL,
		streamURL: func(id string) string {
			if id == "" {
				return ts.URL + "/events/projects?snapshot=false"
			}
			return ts.URL + "/events/projects/" + id + "?snapshot=false"
		},
		publishURL: ts.URL + "/events",
		body:       func(_ string, envelope []byte) []byte { return envelope },
	}
	for _, sc := range []scenario{
		{name: "ORDER", clients: 1, events: 200, projects: 1, posters: 1, payload: 400},
		{name: "FILTERED", clients: 20, events: 200, projects: 20, posters: 2, payload: 400},
		{name: "FANOUT", clients: 20, wildcard: true, events: 50, projects: 5, posters: 2, payload: 400},
		{name: "STALLED", clients: 5, wildcard: true, stalled: 1, events: 200, projects: 5, posters: 2, payload: 400},
	} {
		o, err := runScenario(context.Background(), srv, sc)
		require.NoError(t, err, sc.name)
		assert.Zero(t, o.missing, sc.name)
		assert.Zero(t, o.disorder, sc.name)
		assert.Positive(t, o.rate, sc.name)
		assert.Positive(t, o.p99, sc.name)
	}
}

func TestStatMedianAndRange(t *testing.T) {
	rs := []outcome{{rate: 3}, {rate: 1}, {rate: 2}}
	assert.Equal(t, "2 (1–3)", stat(rs, func(o outcome) float64 { return o.rate }, "%.0f"))
	assert.Equal(t, "1", stat(rs[1:2], func(o outcome) float64 { return o.rate }, "%.0f"))
}
