// Package postgres holds the PostgreSQL adapters (github.com/jackc/pgx/v5):
// a ports.ProjectRepository, and the transactional outbox that makes a
// project's status change and its event commit together.
//
// The outbox is Watermill's: events are written, in the caller's
// transaction, to an outbox table through a watermill-sql/v4 Publisher
// wrapped in a components/forwarder Publisher; a Forwarder (Watermill's
// components/forwarder on a watermill-sql Subscriber) moves them, after the
// commit, to the real publisher — the Bus's gochannel or Kafka publisher, on
// its physical topic, in the codec's wire format with its metadata. Delivery
// is at least once; events of one project leave in commit order. See
// Outbox, Forwarder and Store.
//
// Migrate applies the schema, embedded in the binary (migrations/*.sql), at
// start.
package postgres
