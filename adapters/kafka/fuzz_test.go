package kafka

import (
	"bytes"
	"strings"
	"testing"

	"github.com/IBM/sarama"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// fuzzHeaders turns "k=v\nk=v…" into record headers (a key without "="
// has a nil value).
func fuzzHeaders(s string) []*sarama.RecordHeader {
	var out []*sarama.RecordHeader
	for line := range strings.SplitSeq(s, "\n") {
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		h := &sarama.RecordHeader{Key: []byte(k)}
		if ok {
			h.Value = []byte(v)
		}
		out = append(out, h)
	}
	return out
}

// FuzzKafkaRecord: a record of any key, value and headers goes through the
// consumer's path — the lenient unmarshaler, then the codec's message
// decoding, as the Bus's handler does — without a panic. The unmarshaler
// never fails (a failure would stop the partition), and what the codec
// accepts is a valid event whose project id agrees with the headers, and
// whose data is one line of canonical JSON. The seed corpus is in
// testdata/fuzz/FuzzKafkaRecord.
func FuzzKafkaRecord(f *testing.F) {
	ev, err := domain.NewProjectUpdated(domain.Project{ID: "42", Name: "my_app", Status: domain.StatusCompiling})
	if err != nil {
		f.Fatal(err)
	}
	msg, err := codec.NewMessage(ev)
	if err != nil {
		f.Fatal(err)
	}
	rec, err := newMarshaler().Marshal("t", msg)
	if err != nil {
		f.Fatal(err)
	}
	var hs []string
	for k, v := range msg.Metadata {
		hs = append(hs, k+"="+v)
	}
	hs = append(hs, "_watermill_message_uuid="+msg.UUID, HeaderCEID+"=abc")
	f.Add([]byte("42"), []byte(msg.Payload), strings.Join(hs, "\n"))
	value, _ := rec.Value.Encode()
	f.Add([]byte("42"), value, "event_type=project_updated\nproject_id=42")
	f.Add([]byte(nil), []byte(nil), "")
	f.Add([]byte("x"), []byte(`{"event":"project_error","project":{"id":"x","name":"n","status":"failed"},"error":"e"}`), "event_type=project_error\nproject_id=y")

	f.Fuzz(func(t *testing.T, key, value []byte, headers string) {
		cm := &sarama.ConsumerMessage{Topic: "t", Partition: 3, Offset: 7, Key: key, Value: value, Headers: fuzzHeaders(headers)}
		m, err := lenientUnmarshaler{}.Unmarshal(cm)
		if err != nil || m == nil {
			t.Fatalf("Unmarshal failed (that would stop the partition): %v", err)
		}
		if m.UUID == "" {
			t.Fatal("a message without a UUID cannot be traced in the log")
		}
		got, data, err := codec.FromMessage(m)
		if err != nil {
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("accepted an invalid event %+v: %v", got, err)
		}
		if m.Metadata.Get(codec.MetadataProjectID) != got.Project.ID {
			t.Fatalf("accepted a record whose project_id header %q is not its project %q", m.Metadata.Get(codec.MetadataProjectID), got.Project.ID)
		}
		if bytes.ContainsAny(data, "\r\n") {
			t.Fatalf("data is not one line: %q", data)
		}
		again, err := codec.Decode(data)
		if err != nil || again.Project.ID != got.Project.ID || again.Type != got.Type {
			t.Fatalf("data %q does not decode to the event: %v", data, err)
		}
	})
}
