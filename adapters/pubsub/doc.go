// Package pubsub is the Watermill adapter of statusbroadcaster: a Bus that
// implements the StatusBroadcaster port on any Watermill Publisher and
// delivers events to subscribers through any Watermill Subscriber.
//
// Every event travels on one physical topic (DefaultTopic), whatever its
// project: Kafka topic names cannot hold "projects:<id>", gochannel looks
// topics up by exact name, and no Watermill subscriber has wildcards. The
// project id and logical topic travel in metadata (package codec). One
// Watermill router handler consumes the physical topic and hands each event
// to a fanout.Hub, which applies the "projects:<id>" / "projects:*" filter
// once per event through an index of subscribers — the filter lives at the
// router level, not in every subscriber.
//
// Broadcasting goes through an outbox: the call validates, encodes and
// queues the event and returns in microseconds, whatever the pub/sub does. A
// background loop publishes in batches, in order, retrying with backoff; a
// failure is logged and counted, never returned; an event the pub/sub
// refuses for good (too large, invalid, forbidden) is dropped, logged and
// counted rather than retried, and one whose record would exceed
// Config.MaxMessageBytes is rejected by the call. The outbox is bounded and
// coalesces to the latest event per project when it fills up (package
// coalesce), so an outage costs intermediate states, never the latest one.
//
// The adapters around the Bus: NewInMemory (Watermill's gochannel, below),
// the Kafka adapter (package adapters/kafka, whose New returns a Bus), and
// the HTTP SSE gateway (package adapters/httpapi), which reads a Bus.
//
// NewInMemory wires the Bus to Watermill's gochannel, configured so that it
// keeps order: by default gochannel starts a goroutine per message and
// subscriber and does not (watermill issues #459, #560, #692).
package pubsub
