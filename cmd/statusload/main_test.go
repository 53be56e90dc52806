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
