// Package fanout is where events meet their subscribers. A Hub receives
// each event once, from the Watermill router handler on the physical topic,
// and delivers it to exactly the subscriptions that selected its project —
// those of "projects:<id>" and those of "projects:*" — through an index, so
// the work per event is proportional to the subscribers that want it, not
// to all subscribers.
//
// The Hub also numbers events (the opaque ids SSE clients resume from),
// keeps the latest event of each project (snapshots, GET /projects) and a
// bounded history (Last-Event-ID resume). An Entry keeps the event once, as
// its envelope JSON, plus the few fields the hub needs; Entry.Event decodes
// it on demand.
//
// A snapshot or a replay is not copied when a subscription starts: it is a
// cursor (a sequence number) that Take advances a chunk at a time, reading
// the cache or the history as they are then, under the lock that orders
// delivery. While it lasts the subscription is out of the index; it joins
// live delivery atomically when its cursor reaches the newest event, so a
// subscriber never misses nor repeats an event at the seam, and a slow one
// holds one chunk, not a copy of the cache.
//
// Each Subscription has a bounded queue. A subscription that may be parked
// (SubscribeOptions.ParkWhenFull, the SSE gateway's streams) is taken out of
// the index when its queue fills, costs nothing per event while parked, and
// catches up from the cache (the latest event of each project updated
// meanwhile) when its consumer takes again. Otherwise (an Inbox) a full
// queue coalesces to the latest event per project (see package coalesce),
// and a subscriber that falls hopelessly behind is ended with
// ErrSlowSubscriber rather than allowed to hold unbounded memory or delay
// anyone else. Inbox turns a Subscription into the channel-based subscriber
// of the library API.
//
// Event ids are the hub's own ("<epoch>-<seq>", resumable on this hub only)
// unless the transport defines a cursor: events dispatched with their
// position in a partitioned log that every hub reads in the same order
// (DispatchAt; Kafka: partition and offset) get, with Config.Cursor, an id
// that encodes the hub's position in every partition, from which any such
// hub replays exactly what lies past it (see CursorCodec). The hub knows
// nothing of Kafka.
package fanout
