// Package codec owns the wire format of statusbroadcaster: the envelope JSON
// of the original module and the metadata that travels beside it on the
// physical Watermill topic (Kafka headers in production). Every adapter
// encodes and decodes through it, so the bytes a Kafka consumer reads are the
// bytes an SSE client receives.
package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// Metadata keys set on every message (Kafka headers). They let a consumer
// route or filter without parsing the payload.
const (
	// MetadataEventType holds the envelope's "event" field.
	MetadataEventType = "event_type"
	// MetadataProjectID holds the project id (also the Kafka key).
	MetadataProjectID = "project_id"
	// MetadataTopic holds the logical topic, "projects:<id>".
	MetadataTopic = "topic"
	// MetadataSchemaVersion holds SchemaVersion.
	MetadataSchemaVersion = "schema_version"
)

// SchemaVersion is the version of the envelope format this package writes.
const SchemaVersion = "1"

// ErrBadMessage is wrapped by every decoding error: the input is not a
// valid envelope, or its metadata disagrees with it.
var ErrBadMessage = errors.New("bad message")

// Encode returns the envelope JSON of ev: compact, one line, exactly the
// fields of the original message formats. ev must be valid.
func Encode(ev domain.Event) ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(ev)
}

// Decode parses and validates an envelope. Unknown fields, trailing data and
// invalid content are errors wrapping ErrBadMessage (and, for invalid
// content, domain.ErrInvalidEvent).
func Decode(data []byte) (domain.Event, error) {
	var ev domain.Event
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return domain.Event{}, fmt.Errorf("%w: not an event envelope: %w", ErrBadMessage, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return domain.Event{}, fmt.Errorf("%w: data after the envelope", ErrBadMessage)
	}
	if err := ev.Validate(); err != nil {
		return domain.Event{}, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return ev, nil
}

// NewMessage encodes ev as a Watermill message for the physical topic: the
// envelope JSON as payload, the metadata keys above set.
func NewMessage(ev domain.Event) (*message.Message, error) {
	payload, err := Encode(ev)
	if err != nil {
		return nil, err
	}
	msg := message.NewMessage(watermill.NewUUID(), payload)
	msg.Metadata.Set(MetadataEventType, string(ev.Type))
	msg.Metadata.Set(MetadataProjectID, ev.Project.ID)
	msg.Metadata.Set(MetadataTopic, ev.Topic().String())
	msg.Metadata.Set(MetadataSchemaVersion, SchemaVersion)
	return msg, nil
}

// FromMessage decodes a message of the physical topic and returns the event
// and its canonical envelope JSON. The project id and event type in the
// metadata must be present and agree with the payload.
func FromMessage(msg *message.Message) (domain.Event, []byte, error) {
	ev, err := Decode(msg.Payload)
	if err != nil {
		return domain.Event{}, nil, err
	}
	if got := msg.Metadata.Get(MetadataProjectID); got != ev.Project.ID {
		return domain.Event{}, nil, fmt.Errorf("%w: metadata %s=%q, payload project id %q", ErrBadMessage, MetadataProjectID, got, ev.Project.ID)
	}
	if got := msg.Metadata.Get(MetadataEventType); got != string(ev.Type) {
		return domain.Event{}, nil, fmt.Errorf("%w: metadata %s=%q, payload event %q", ErrBadMessage, MetadataEventType, got, ev.Type)
	}
	if v := msg.Metadata.Get(MetadataSchemaVersion); v != "" && v != SchemaVersion {
		return domain.Event{}, nil, fmt.Errorf("%w: schema version %q, want %q", ErrBadMessage, v, SchemaVersion)
	}
	// Re-encode rather than pass the payload on: SSE needs one compact
	// line, and a foreign producer may have written spaces or newlines.
	data, err := json.Marshal(ev)
	if err != nil {
		return domain.Event{}, nil, fmt.Errorf("%w: %w", ErrBadMessage, err)
	}
	return ev, data, nil
}
