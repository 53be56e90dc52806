package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ?snapshot= takes exactly true or false, as the README says; anything
// else is a 400 (strconv.ParseBool used to accept 1, t, T, TRUE...).
func TestSnapshotParameterIsTrueOrFalse(t *testing.T) {
	g := newGateway(t, nil)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("snap", 1)))
	require.Eventually(t, func() bool { _, ok := g.bus.Latest("snap"); return ok }, 5*time.Second, 5*time.Millisecond)
	for _, q := range []string{"1", "0", "t", "f", "T", "TRUE", "False", "", "yes", "true&snapshot=false"} {
		t.Run(q, func(t *testing.T) {
			resp, body := g.get(t, "/events/projects/snap?snapshot="+q)
			requireJSONError(t, resp, body, http.StatusBadRequest)
			assert.JSONEq(t, `{"error":"snapshot must be true or false"}`, body)
		})
	}
	with := g.openStream(t, "/events/projects/snap?snapshot=true", nil)
	assert.Contains(t, with.next().Data, `"id":"snap"`, "the snapshot")
	without := g.openStream(t, "/events/projects/snap?snapshot=false", nil)
	require.NoError(t, g.bus.BroadcastProjectUpdate(project("snap", 2)))
	assert.Contains(t, without.next().Data, `"name":"app-2"`, "no snapshot: the live event first")
}
