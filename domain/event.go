package domain

import (
	"errors"
	"fmt"
)

// EventType names what happened to a project. On the wire it is the
// envelope's "event" field.
type EventType string

// The two event types of the original module.
const (
	// EventProjectUpdated carries a project's new state.
	EventProjectUpdated EventType = "project_updated"
	// EventProjectError carries a project whose setup failed, and why.
	EventProjectError EventType = "project_error"
)

// Validate reports whether t is one of the known event types.
func (t EventType) Validate() error {
	switch t {
	case EventProjectUpdated, EventProjectError:
		return nil
	case "":
		return fmt.Errorf("%w: event type is missing", ErrInvalidEvent)
	}
	return fmt.Errorf("%w: unknown event type %q (want %q or %q)", ErrInvalidEvent, t, EventProjectUpdated, EventProjectError)
}

// ErrInvalidEvent is wrapped by every validation error about an event
// envelope. Errors about the project inside it wrap ErrInvalidProject too.
var ErrInvalidEvent = errors.New("invalid event")

// Event is the envelope every subscriber receives, with exactly the fields
// of the original messages:
//
//	{"event":"project_updated","project":{…}}
//	{"event":"project_error","project":{…},"error":"Mix deps.get failed"}
//
// A project_updated event has no "error" key at all; a project_error event
// always has a non-empty one.
type Event struct {
	Type    EventType `json:"event"`
	Project Project   `json:"project"`
	Error   string    `json:"error,omitempty"`
}

// NewProjectUpdated returns the project_updated event for p.
func NewProjectUpdated(p Project) (Event, error) {
	e := Event{Type: EventProjectUpdated, Project: p}
	return e, e.Validate()
}

// NewProjectError returns the project_error event for p, which failed
// because of reason.
func NewProjectError(p Project, reason string) (Event, error) {
	e := Event{Type: EventProjectError, Project: p, Error: reason}
	return e, e.Validate()
}

// Validate checks the envelope: a known type, a valid project, an error
// message exactly when the type is project_error.
func (e Event) Validate() error {
	if err := e.Type.Validate(); err != nil {
		return err
	}
	if err := e.Project.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidEvent, err)
	}
	switch {
	case e.Type == EventProjectError && e.Error == "":
		return fmt.Errorf("%w: a %s event needs a non-empty error", ErrInvalidEvent, EventProjectError)
	case e.Type == EventProjectUpdated && e.Error != "":
		return fmt.Errorf("%w: a %s event carries no error (use %s)", ErrInvalidEvent, EventProjectUpdated, EventProjectError)
	}
	return nil
}

// Topic returns the topic the event is published on: its project's topic.
func (e Event) Topic() Topic { return ProjectTopic(e.Project.ID) }
