package codec_test

import (
	"bytes"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
)

// FuzzDecode: whatever the bytes (a POST /events body, a Kafka value),
// Decode never panics, and what it accepts is a valid event that encodes
// to one line of JSON, decodes again to the same event, and is stable
// under a second round trip. The seed corpus is in testdata/fuzz/FuzzDecode.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"event":"project_updated","project":{"id":"42","name":"my_app","status":"compiling"}}`))
	f.Add([]byte(`{"event":"project_error","project":{"id":"42","name":"my_app","status":"failed"},"error":"Mix deps.get failed"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := codec.Decode(data)
		if err != nil {
			return
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid event %+v: %v", ev, err)
		}
		enc, err := codec.Encode(ev)
		if err != nil {
			t.Fatalf("Decode accepted %q, Encode refuses it: %v", data, err)
		}
		if bytes.ContainsAny(enc, "\r\n") {
			t.Fatalf("encoding is not one line (SSE data): %q", enc)
		}
		again, err := codec.Decode(enc)
		if err != nil {
			t.Fatalf("the encoding %q of an accepted event does not decode: %v", enc, err)
		}
		enc2, err := codec.Encode(again)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip changed the event: %q → %q (%v)", enc, enc2, err)
		}
		// The message path carries the same event.
		msg, err := codec.NewMessage(ev)
		if err != nil {
			t.Fatalf("NewMessage: %v", err)
		}
		if _, _, err := codec.FromMessage(message.NewMessage(msg.UUID, msg.Payload)); err == nil {
			t.Fatalf("a message without metadata was accepted: %q", msg.Payload)
		}
		got, data2, err := codec.FromMessage(msg)
		if err != nil || !bytes.Equal(data2, enc) || got.Project.ID != ev.Project.ID {
			t.Fatalf("FromMessage(NewMessage(ev)) = %q, %v; want %q", data2, err, enc)
		}
	})
}
