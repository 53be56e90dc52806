package domain

import "errors"

// ErrBroadcasterClosed is wrapped by the error a StatusBroadcaster returns
// for a broadcast after it was closed: the event is not broadcast. An HTTP
// intake answers 503 for it, never 202.
var ErrBroadcasterClosed = errors.New("broadcaster closed")

// StatusBroadcaster publishes the full, updated record of a project every
// time the setup process changes it, on the topic "projects:<id>", so that
// subscribers of that topic and of "projects:*" receive it.
//
// It is the port the original module's broadcast_project_update/1 and
// broadcast_project_error/2 become. Like them, broadcasting never interrupts
// the caller: implementations return at once (within milliseconds, even when
// the pub/sub is slow or down), deliver in the background in the order of
// the calls, and log and count failures instead of returning them.
//
// The error result is therefore only about the input and the broadcaster's
// own life: it is non-nil, and wraps ErrInvalidEvent, when the project (or
// the error message) is not valid; it wraps ErrBroadcasterClosed when the
// broadcaster has been closed (shut down) and can no longer deliver. In
// both cases nothing is broadcast. A caller that has nothing sensible to do
// about it may ignore it, as the original ignored :ok.
//
// Implementations are safe for concurrent use.
type StatusBroadcaster interface {
	// BroadcastProjectUpdate publishes {"event":"project_updated","project":p}.
	BroadcastProjectUpdate(p Project) error
	// BroadcastProjectError publishes {"event":"project_error","project":p,"error":reason}.
	// The setup process sets p.Status to StatusFailed before calling it.
	BroadcastProjectError(p Project, reason string) error
}
