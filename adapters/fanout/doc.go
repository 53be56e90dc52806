// Package fanout is where events meet their subscribers. A Hub receives
// each event once, from the Watermill router handler on the physical topic,
// and delivers it to exactly the subscriptions that selected its project —
// those of "projects:<id>" and those of "projects:*" — through an index, so
// the work per event is proportional to the subscribers that want it, not
// to all subscribers.
//
// The Hub also numbers events (the opaque ids SSE clients resume from),
// keeps the latest event of each project (snapshots, GET /projects) and a
// bounded history (Last-Event-ID resume). Registering a subscription and
// computing its snapshot or replay happen atomically with delivery, so a
// subscriber never misses nor repeats an event at the seam. The snapshot or
// replay is held beside the subscription's queue, not in it, so it is
// bounded by MaxProjects or History rather than by the queue.
//
// Each Subscription has a bounded queue that coalesces to the latest event
// per project when it fills up (see package coalesce); a subscriber that
// falls hopelessly behind is ended with ErrSlowSubscriber rather than
// allowed to hold unbounded memory or delay anyone else. Inbox turns a
// Subscription into the channel-based subscriber of the library API.
package fanout
