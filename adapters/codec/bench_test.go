package codec

import (
	"strings"
	"testing"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// benchEvent is an event of about 1 KiB of envelope, as the load program
// posts.
func benchEvent() domain.Event {
	now := time.Date(2026, 11, 28, 12, 0, 0, 123456789, time.UTC)
	ev, err := domain.NewProjectUpdated(domain.Project{
		ID: "project-0042", Name: "p-" + strings.Repeat("x", 800), Status: domain.StatusCompiling,
		CodeRepo: "https://example.com/code.git", DocsRepo: "https://example.com/docs.git",
		InsertedAt: now, UpdatedAt: now,
	})
	if err != nil {
		panic(err)
	}
	return ev
}

// BenchmarkDecode is what POST /events and the router handler pay to parse
// an envelope of about 1 KiB.
func BenchmarkDecode(b *testing.B) {
	data, err := Encode(benchEvent())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNewMessage is what a broadcast pays to encode its message.
func BenchmarkNewMessage(b *testing.B) {
	ev := benchEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewMessage(ev); err != nil {
			b.Fatal(err)
		}
	}
}
