-- The transactional outbox: watermill-sql/v4's DefaultPostgreSQLSchema and
-- DefaultPostgreSQLOffsetsAdapter tables for the topic
-- "statusbroadcaster_outbox", created here so that the schema is versioned
-- with the rest (the same DDL as watermill-sql's SchemaInitializingQueries).
--
-- Rows are read in (transaction_id, offset) order and only below
-- pg_snapshot_xmin(pg_current_snapshot()), i.e. once every transaction that
-- could still insert a smaller transaction id has ended: a transaction that
-- commits late can never be skipped.
CREATE TABLE watermill_statusbroadcaster_outbox (
    "offset"         BIGSERIAL,
    "uuid"           VARCHAR(36) NOT NULL,
    "created_at"     TIMESTAMP   NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "payload"        JSON        DEFAULT NULL,
    "metadata"       JSON        DEFAULT NULL,
    "transaction_id" xid8        NOT NULL,
    PRIMARY KEY ("transaction_id", "offset")
);

CREATE TABLE watermill_offsets_statusbroadcaster_outbox (
    consumer_group                VARCHAR(255) NOT NULL,
    offset_acked                  BIGINT,
    last_processed_transaction_id xid8         NOT NULL,
    PRIMARY KEY (consumer_group)
);
