package domain

import (
	"errors"
	"fmt"
	"strings"
)

// Topic is a logical topic: "projects:<id>" for one project, or the selector
// "projects:*" for every project. Topics are values of the domain, not names
// of any transport: every event travels on one physical topic and is matched
// against logical topics by the router.
type Topic string

// topicPrefix starts every logical topic.
const topicPrefix = "projects:"

// AllProjects is the selector that matches every project, as
// subscribe_to_all_projects/0 used it in the original module.
const AllProjects Topic = topicPrefix + "*"

// ErrInvalidTopic is wrapped by every error about a malformed topic.
var ErrInvalidTopic = errors.New("invalid topic")

// ProjectTopic returns the topic of one project, "projects:" + id. The id is
// not checked here (project_topic/1 did not check it either); ParseTopic and
// every subscription function do check it.
func ProjectTopic(id string) Topic {
	return Topic(topicPrefix + id)
}

// ParseTopic turns a string into a Topic: exactly "projects:*", or
// "projects:" followed by a valid project id.
func ParseTopic(s string) (Topic, error) {
	rest, ok := strings.CutPrefix(s, topicPrefix)
	if !ok {
		return "", fmt.Errorf("%w: %q does not start with %q", ErrInvalidTopic, s, topicPrefix)
	}
	if rest == "*" {
		return AllProjects, nil
	}
	if err := ValidateProjectID(rest); err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrInvalidTopic, s, err)
	}
	return Topic(s), nil
}

// IsWildcard reports whether t is the "projects:*" selector.
func (t Topic) IsWildcard() bool { return t == AllProjects }

// ProjectID returns the project id of a project topic, and false for the
// wildcard or a string that is not a topic.
func (t Topic) ProjectID() (string, bool) {
	id, ok := strings.CutPrefix(string(t), topicPrefix)
	if !ok || id == "*" || id == "" {
		return "", false
	}
	return id, true
}

// Matches reports whether an event about the project projectID is published
// on t: t is that project's topic or the wildcard.
func (t Topic) Matches(projectID string) bool {
	if t.IsWildcard() {
		return true
	}
	id, ok := t.ProjectID()
	return ok && id == projectID
}

// String returns the topic as text.
func (t Topic) String() string { return string(t) }
