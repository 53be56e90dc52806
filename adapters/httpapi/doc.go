// Package httpapi is the HTTP adapter of statusbroadcaster: the outbound
// Server-Sent Events gateway that browsers and other HTTP clients subscribe
// through, the inbound POST /events that broadcasts an envelope, the
// latest-state queries, and the health, readiness and metrics endpoints.
//
// Streams subscribe to the fanout.Hub, where the "projects:<id>" and
// "projects:*" selectors are applied once per event by the Watermill router
// handler (package pubsub) — not per client. Each stream has a bounded queue
// and writes every queued event in one write with a deadline, so a client
// that stops reading costs a bounded amount of memory and never delays the
// others.
//
// In front of the routes (harden.go): CORS for a list of exact origins
// (rs/cors), the client address (trusted proxies and X-Forwarded-For), a
// read deadline for request bodies and a per-address limit of streams; in
// POST /events, a rate limit per client (ratelimit.go), keyed by what an
// authentication middleware puts in the request context with
// WithRateLimitKey, or by the client address.
//
// Why not watermill-http's SSERouter: it sends no "id:" lines (no resume),
// no heartbeats, acknowledges before sending, fans out through an unordered
// gochannel and fixes its topics at start-up; a stalled client parks a
// goroutine per event. The stream handler here is written for what that
// router lacks; the README says what was kept from watermill-http.
package httpapi
