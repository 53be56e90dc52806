package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// FuzzPostEvent: any body POSTed to /events gets 202 or a 4xx with a JSON
// {"error": …}, never a 5xx or a panic, and a 202 only for a body the codec
// accepts, on the topic of its project. The seed corpus is in
// testdata/fuzz/FuzzPostEvent.
func FuzzPostEvent(f *testing.F) {
	f.Add(envelope("p1", 1, ""))
	f.Add(envelope("p1", 2, "Mix deps.get failed"))
	f.Add(`{"event":"project_updated","project":{"id":"a:b","name":"x","status":"ready"}}`)
	f.Add(`{"event":"project_updated","project":{"id":"x","name":"x","status":"ready"}} {}`)
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = bus.Close(ctx)
	})
	api := httpapi.New(httpapi.Config{MaxBodyBytes: 4 << 10}, bus, nil)

	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, "/events", bytes.NewBufferString(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusAccepted:
			ev, err := codec.Decode([]byte(body))
			if err != nil {
				t.Fatalf("202 for a body the codec rejects: %q: %v", body, err)
			}
			var got struct{ Topic string }
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got.Topic != ev.Topic().String() {
				t.Fatalf("202 body %q, want topic %s", rec.Body.Bytes(), ev.Topic())
			}
		case rec.Code >= 400 && rec.Code < 500:
			var e struct{ Error string }
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%d without a JSON error: %q", rec.Code, rec.Body.Bytes())
			}
			if _, err := codec.Decode([]byte(body)); err == nil && len(body) <= 4<<10 {
				t.Fatalf("%d for a valid envelope %q: %s", rec.Code, body, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
	})
}
