package ports

import "github.com/statusbroadcaster/statusbroadcaster/domain"

// Inbox is one subscriber, the Go form of a process that called the
// original module's subscription helpers: a channel of events plus topics
// that can be added and removed at run time.
//
// Contract:
//   - Safe for concurrent use.
//   - An event is delivered once even when it matches several topics of the
//     inbox (its project's topic and "projects:*").
//   - Events of one project arrive in the order they were broadcast.
//   - Subscribe functions return at once; they fail for an invalid project
//     id or a closed inbox. Unsubscribe functions always succeed; once one
//     returns, the reader receives no further event that matched only the
//     removed topic.
//   - A slow reader never delays other subscribers; see the implementation
//     for what happens to its backlog.
//   - The implementation owns the Events channel and closes it when the
//     inbox is closed or ended; Err then says why.
type Inbox interface {
	// SubscribeToProject adds the topic "projects:<projectID>"
	// (subscribe_to_project/1).
	SubscribeToProject(projectID string) error
	// SubscribeToAllProjects adds the topic "projects:*"
	// (subscribe_to_all_projects/0).
	SubscribeToAllProjects() error
	// UnsubscribeFromProject removes "projects:<projectID>"
	// (unsubscribe_from_project/1).
	UnsubscribeFromProject(projectID string)
	// UnsubscribeFromAllProjects removes "projects:*"
	// (unsubscribe_from_all_projects/0).
	UnsubscribeFromAllProjects()
	// Events returns the channel events arrive on.
	Events() <-chan domain.Event
	// Err returns nil while the inbox is open, then why it ended.
	Err() error
	// Close ends the inbox and releases everything it holds. Idempotent.
	Close() error
}

// Subscriptions opens inboxes. Implementations are safe for concurrent use.
type Subscriptions interface {
	// NewInbox returns an open inbox with no topics.
	NewInbox() (Inbox, error)
}
