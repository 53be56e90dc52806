package codec_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/codec"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func project(id string, status domain.Status) domain.Project {
	return domain.Project{
		ID:         id,
		Name:       "my_app",
		Status:     status,
		CodeRepo:   "https://github.com/user/my_app",
		DocsRepo:   "https://github.com/user/my_app_docs",
		InsertedAt: time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC),
		UpdatedAt:  time.Date(2024, 1, 1, 12, 5, 0, 0, time.UTC),
	}
}

func updated(t *testing.T, id string) domain.Event {
	t.Helper()
	ev, err := domain.NewProjectUpdated(project(id, domain.StatusCompiling))
	require.NoError(t, err)
	return ev
}

func failed(t *testing.T, id, reason string) domain.Event {
	t.Helper()
	ev, err := domain.NewProjectError(project(id, domain.StatusFailed), reason)
	require.NoError(t, err)
	return ev
}

const (
	goldenUpdated = `{"event":"project_updated","project":{"id":"uuid","name":"my_app","status":"compiling","code_repo":"https://github.com/user/my_app","docs_repo":"https://github.com/user/my_app_docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"}}`
	goldenError   = `{"event":"project_error","project":{"id":"uuid","name":"my_app","status":"failed","code_repo":"https://github.com/user/my_app","docs_repo":"https://github.com/user/my_app_docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"},"error":"Mix deps.get failed"}`
)

func TestEncodeIsTheSeedEnvelope(t *testing.T) {
	data, err := codec.Encode(updated(t, "uuid"))
	require.NoError(t, err)
	assert.Equal(t, goldenUpdated, string(data))

	data, err = codec.Encode(failed(t, "uuid", "Mix deps.get failed"))
	require.NoError(t, err)
	assert.Equal(t, goldenError, string(data))
}

func TestEncodeIsOneLine(t *testing.T) {
	// SSE "data:" is one line: a multi-line error message must not break it.
	data, err := codec.Encode(failed(t, "uuid", "mix compile failed:\n  lib/app.ex:42\r\n"))
	require.NoError(t, err)
	assert.NotContains(t, string(data), "\n")
	assert.NotContains(t, string(data), "\r")

	ev, err := codec.Decode(data)
	require.NoError(t, err)
	assert.Equal(t, "mix compile failed:\n  lib/app.ex:42\r\n", ev.Error)
}

func TestEncodeRejectsInvalidEvent(t *testing.T) {
	tests := map[string]domain.Event{
		"zero":                {},
		"bad id":              {Type: domain.EventProjectUpdated, Project: project("a:b", domain.StatusReady)},
		"error without error": {Type: domain.EventProjectError, Project: project("a", domain.StatusFailed)},
		"updated with error":  {Type: domain.EventProjectUpdated, Project: project("a", domain.StatusReady), Error: "x"},
	}
	for name, ev := range tests {
		t.Run(name, func(t *testing.T) {
			data, err := codec.Encode(ev)
			assert.ErrorIs(t, err, domain.ErrInvalidEvent)
			assert.Nil(t, data)
		})
	}
}

func TestRoundTrip(t *testing.T) {
	events := []domain.Event{
		updated(t, "uuid"),
		failed(t, "uuid", "Mix deps.get failed"),
		failed(t, "x.Y_z-9", `quotes " and <html> & unicode é`),
	}
	// An unknown status word is carried through unchanged.
	future, err := domain.NewProjectUpdated(project("p", "running_tests"))
	require.NoError(t, err)
	events = append(events, future)

	for _, ev := range events {
		data, err := codec.Encode(ev)
		require.NoError(t, err)
		got, err := codec.Decode(data)
		require.NoError(t, err)
		assert.Equal(t, ev, got)
	}
}

func TestDecodeGolden(t *testing.T) {
	ev, err := codec.Decode([]byte(goldenError))
	require.NoError(t, err)
	assert.Equal(t, failed(t, "uuid", "Mix deps.get failed"), ev)

	// Surrounding whitespace is not trailing data.
	ev, err = codec.Decode([]byte("\n  " + goldenUpdated + "\n"))
	require.NoError(t, err)
	assert.Equal(t, updated(t, "uuid"), ev)
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		invalid bool // the JSON parses but the envelope is invalid
	}{
		{"empty", ``, false},
		{"not JSON", `hello`, false},
		{"truncated", goldenUpdated[:len(goldenUpdated)-1], false},
		{"array", `[]`, false},
		{"string", `"project_updated"`, false},
		{"unknown top-level field", strings.Replace(goldenUpdated, `{"event"`, `{"extra":1,"event"`, 1), false},
		{"unknown project field", strings.Replace(goldenUpdated, `"name"`, `"owner":"me","name"`, 1), false},
		{"trailing object", goldenUpdated + goldenUpdated, false},
		{"trailing garbage", goldenUpdated + "x", false},
		{"trailing number", goldenUpdated + " 1", false},
		{"wrong type of field", strings.Replace(goldenUpdated, `"status":"compiling"`, `"status":3`, 1), false},
		{"bad timestamp", strings.Replace(goldenUpdated, `"2024-01-01T12:00:00Z"`, `"yesterday"`, 1), false},
		{"null", `null`, true},
		{"empty object", `{}`, true},
		{"unknown event type", strings.Replace(goldenUpdated, "project_updated", "project_deleted", 1), true},
		{"missing event type", strings.Replace(goldenUpdated, `"event":"project_updated",`, ``, 1), true},
		{"missing project", `{"event":"project_updated"}`, true},
		{"missing project id", strings.Replace(goldenUpdated, `"id":"uuid",`, ``, 1), true},
		{"empty project id", strings.Replace(goldenUpdated, `"id":"uuid"`, `"id":""`, 1), true},
		{"project id forging a topic", strings.Replace(goldenUpdated, `"id":"uuid"`, `"id":"a:*"`, 1), true},
		{"upper-case status", strings.Replace(goldenUpdated, `"compiling"`, `"Compiling"`, 1), true},
		{"missing status", strings.Replace(goldenUpdated, `"status":"compiling",`, ``, 1), true},
		{"project_error without error", strings.Replace(goldenError, `,"error":"Mix deps.get failed"`, ``, 1), true},
		{"project_error with empty error", strings.Replace(goldenError, `"Mix deps.get failed"`, `""`, 1), true},
		{"project_updated with error", strings.Replace(goldenUpdated, `}}`, `},"error":"boom"}`, 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := codec.Decode([]byte(tt.data))
			require.ErrorIs(t, err, codec.ErrBadMessage)
			if tt.invalid {
				assert.ErrorIs(t, err, domain.ErrInvalidEvent)
			}
			assert.Equal(t, domain.Event{}, ev)
		})
	}
}

func TestNewMessage(t *testing.T) {
	ev := failed(t, "uuid", "Mix deps.get failed")
	msg, err := codec.NewMessage(ev)
	require.NoError(t, err)

	assert.Equal(t, goldenError, string(msg.Payload))
	assert.NotEmpty(t, msg.UUID)
	assert.Equal(t, "project_error", msg.Metadata.Get(codec.MetadataEventType))
	assert.Equal(t, "uuid", msg.Metadata.Get(codec.MetadataProjectID))
	assert.Equal(t, "projects:uuid", msg.Metadata.Get(codec.MetadataTopic))
	assert.Equal(t, "1", msg.Metadata.Get(codec.MetadataSchemaVersion))
	assert.Equal(t, codec.SchemaVersion, "1")

	other, err := codec.NewMessage(ev)
	require.NoError(t, err)
	assert.NotEqual(t, msg.UUID, other.UUID, "every message needs its own UUID")
}

func TestNewMessageRejectsInvalidEvent(t *testing.T) {
	msg, err := codec.NewMessage(domain.Event{Type: domain.EventProjectUpdated, Project: project("a b", domain.StatusReady)})
	assert.ErrorIs(t, err, domain.ErrInvalidEvent)
	assert.Nil(t, msg)
}

func TestFromMessageRoundTrip(t *testing.T) {
	for _, ev := range []domain.Event{updated(t, "uuid"), failed(t, "uuid", "Mix deps.get failed")} {
		msg, err := codec.NewMessage(ev)
		require.NoError(t, err)
		got, data, err := codec.FromMessage(msg)
		require.NoError(t, err)
		assert.Equal(t, ev, got)
		assert.Equal(t, string(msg.Payload), string(data))
	}
}

// A message published in process (Watermill's gochannel with
// PreserveContext hands the subscriber a copy with the publisher's context)
// is read from the event NewMessage encoded, without decoding: nothing is
// allocated. A copy whose payload was replaced is read from its payload,
// never from the context.
func TestFromMessageTakesTheEventItWasMadeFrom(t *testing.T) {
	ev := updated(t, "uuid")
	msg, err := codec.NewMessage(ev)
	require.NoError(t, err)
	delivered := msg.CopyWithContext() // what gochannel's subscriber gets

	got, data, err := codec.FromMessage(delivered)
	require.NoError(t, err)
	assert.Equal(t, ev, got)
	assert.Equal(t, goldenUpdated, string(data))
	allocs := testing.AllocsPerRun(100, func() { _, _, _ = codec.FromMessage(delivered) })
	assert.Zero(t, allocs, "an in-process message is decoded again")

	changed := msg.CopyWithContext()
	other := updated(t, "uuid")
	other.Project.Status = domain.StatusCloning
	changed.Payload, err = codec.Encode(other)
	require.NoError(t, err)
	got, _, err = codec.FromMessage(changed)
	require.NoError(t, err)
	assert.Equal(t, domain.StatusCloning, got.Project.Status, "the payload, not the context, is the event")

	relabelled := delivered.CopyWithContext()
	relabelled.Metadata.Set(codec.MetadataProjectID, "other")
	_, _, err = codec.FromMessage(relabelled)
	require.ErrorIs(t, err, codec.ErrBadMessage, "metadata that disagrees with the carried event")
}

func TestFromMessageCompactsForeignPayload(t *testing.T) {
	pretty := `{
  "event": "project_error",
  "project": {
    "id": "uuid", "name": "my_app", "status": "failed",
    "code_repo": "https://github.com/user/my_app",
    "docs_repo": "https://github.com/user/my_app_docs",
    "inserted_at": "2024-01-01T12:00:00Z",
    "updated_at": "2024-01-01T12:05:00Z"
  },
  "error": "Mix deps.get failed"
}
`
	msg := message.NewMessage("foreign-1", []byte(pretty))
	msg.Metadata.Set(codec.MetadataEventType, "project_error")
	msg.Metadata.Set(codec.MetadataProjectID, "uuid")
	msg.Metadata.Set(codec.MetadataSchemaVersion, "1")

	ev, data, err := codec.FromMessage(msg)
	require.NoError(t, err)
	assert.Equal(t, failed(t, "uuid", "Mix deps.get failed"), ev)
	assert.Equal(t, goldenError, string(data))
	assert.False(t, bytes.ContainsAny(data, "\r\n"))
}

func TestFromMessageSchemaVersionMayBeAbsent(t *testing.T) {
	// A foreign producer that sets only the routing headers is accepted.
	msg := message.NewMessage("foreign-2", []byte(goldenUpdated))
	msg.Metadata.Set(codec.MetadataEventType, "project_updated")
	msg.Metadata.Set(codec.MetadataProjectID, "uuid")
	ev, _, err := codec.FromMessage(msg)
	require.NoError(t, err)
	assert.Equal(t, updated(t, "uuid"), ev)
}

func TestFromMessageRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*message.Message)
	}{
		{"project id disagrees", func(m *message.Message) { m.Metadata.Set(codec.MetadataProjectID, "other") }},
		{"project id missing", func(m *message.Message) { delete(m.Metadata, codec.MetadataProjectID) }},
		{"event type disagrees", func(m *message.Message) { m.Metadata.Set(codec.MetadataEventType, "project_error") }},
		{"event type missing", func(m *message.Message) { delete(m.Metadata, codec.MetadataEventType) }},
		{"no metadata at all", func(m *message.Message) { m.Metadata = message.Metadata{} }},
		{"wrong schema version", func(m *message.Message) { m.Metadata.Set(codec.MetadataSchemaVersion, "2") }},
		{"bad payload", func(m *message.Message) { m.Payload = []byte(`{"event":"project_updated"}`) }},
		{"not JSON", func(m *message.Message) { m.Payload = []byte(`nope`) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := codec.NewMessage(updated(t, "uuid"))
			require.NoError(t, err)
			tt.mutate(msg)
			ev, data, err := codec.FromMessage(msg)
			require.ErrorIs(t, err, codec.ErrBadMessage)
			assert.Equal(t, domain.Event{}, ev)
			assert.Nil(t, data)
		})
	}
}

// A timestamp may be written with escapes, as any JSON string may (.NET's
// System.Text.Json writes '+' as \u002B): Decode reads it. encoding/json's
// Decoder, which Decode replaced, refused it (it hands time.Time the raw,
// still escaped string: go.dev/issue/47353); this is the one difference
// between the two (FuzzDecodeMatchesEncodingJSON).
func TestDecodeAcceptsEscapedTimestamps(t *testing.T) {
	for in, want := range map[string]time.Time{
		`{"event":"project_updated","project":{"id":"42","status":"compiling","updated_at":"2024-01-01T00:00:00\u002B01:00"}}`: time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("", 3600)),
		`{"event":"project_updated","project":{"id":"42","status":"compiling","updated_at":"2024-01-01T00:00:00\u005A"}}`:      time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		ev, err := codec.Decode([]byte(in))
		require.NoError(t, err, in)
		assert.True(t, want.Equal(ev.Project.UpdatedAt), "%s: got %s", in, ev.Project.UpdatedAt)
	}
	_, err := codec.Decode([]byte(`{"event":"project_updated","project":{"id":"42","status":"compiling","updated_at":"2024-01-01T00:00:00\u002B25:00"}}`))
	assert.ErrorIs(t, err, codec.ErrBadMessage, "an escaped timestamp is still checked")
}
