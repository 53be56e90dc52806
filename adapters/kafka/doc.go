// Package kafka is the Kafka adapter of statusbroadcaster: New returns a
// pubsub.Bus whose publisher and subscriber are watermill-kafka's (Sarama),
// with what a durable, partitioned log needs around them: an idempotent
// batch publisher that never reorders a project's events, a consumer that
// reconnects forever and reads partitions added later, the skipping of
// records already dispatched (offsets tracked per partition, also when they
// go backwards), ack-after-read for consumer groups, and readiness probes.
//
// Every event of a project is one record keyed by the project id (murmur2,
// as the Java client), so a project's events stay in order on one
// partition. A Bus without a consumer group (a gateway) reads every
// partition; with one (a backend consumer) it shares them with its group
// and commits only what its readers received.
//
// The Bus itself — outbox, router, fan-out — is package pubsub's; this
// package plugs into it through pubsub.Config (Dedupe, Ready,
// AckAfterRead, MaxMessageBytes) and the hooks pubsub.RecordSizer,
// pubsub.RejectedError and pubsub.Aborter.
package kafka
