package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
)

// panickyBus is a Bus whose Subscribe panics (a bug in a Bus, or in the
// metrics it calls).
type panickyBus struct{ hubOnly }

func (panickyBus) Subscribe(fanout.SubscribeOptions) (*fanout.Subscription, error) { panic("boom") }

// A stream whose setup panics after it was counted must give its place
// back: otherwise MaxClients such panics refuse every stream for good.
func TestStreamSlotFreedWhenSubscribePanics(t *testing.T) {
	hub := fanout.NewHub(fanout.Config{})
	defer hub.Close()
	api := httpapi.New(httpapi.Config{MaxClients: 1}, panickyBus{hubOnly{Hub: hub}}, nil)
	func() {
		defer func() { _ = recover() }() // net/http recovers it
		api.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/events/projects?snapshot=false", nil))
	}()
	assert.Equal(t, 0, api.OpenStreams(), "the panicked stream still counts against MaxClients")
}
