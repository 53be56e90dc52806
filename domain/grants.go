package domain

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// ErrInvalidGrant is wrapped by every error about a malformed grant.
var ErrInvalidGrant = errors.New("invalid grant")

// Grants are the topic selectors a client was granted for one action
// (subscribing or publishing): "projects:*" covers every project,
// "projects:<id>" covers one. The zero value grants nothing. Grants are
// immutable once parsed and safe for concurrent use.
type Grants struct {
	all      bool
	projects map[string]struct{}
}

// ParseGrants parses selectors, each exactly "projects:*" or
// "projects:<valid id>" (see ParseTopic). Any other value makes the whole
// set invalid rather than being skipped: a grant nobody can read is a
// mistake in whatever issued it, and must not silently mean less (or
// more) than it says. Repeated selectors are harmless. No selectors (nil
// or empty) is valid and grants nothing.
func ParseGrants(selectors []string) (Grants, error) {
	var g Grants
	for _, s := range selectors {
		t, err := ParseTopic(s)
		if err != nil {
			return Grants{}, fmt.Errorf("%w: %w", ErrInvalidGrant, err)
		}
		if t.IsWildcard() {
			g.all = true
			continue
		}
		id, _ := t.ProjectID()
		if g.projects == nil {
			g.projects = make(map[string]struct{}, len(selectors))
		}
		g.projects[id] = struct{}{}
	}
	if g.all {
		g.projects = nil // every project is covered anyway
	}
	return g, nil
}

// AllGrants covers every project: what everyone may do when statusd runs
// without authorization.
func AllGrants() Grants { return Grants{all: true} }

// CoversProject reports whether the grants cover the project id: they hold
// "projects:*" or "projects:<id>".
func (g Grants) CoversProject(id string) bool {
	if g.all {
		return true
	}
	_, ok := g.projects[id]
	return ok
}

// Covers reports whether the grants cover the selector t. The wildcard
// "projects:*" is covered only by the wildcard grant: grants for some (even
// every known) project do not cover projects that appear later. A string
// that is not a valid topic is covered by nothing.
func (g Grants) Covers(t Topic) bool {
	if t.IsWildcard() {
		return g.all
	}
	id, ok := t.ProjectID()
	if !ok || ValidateProjectID(id) != nil {
		return false
	}
	return g.CoversProject(id)
}

// CoversAll reports whether the grants cover every selector in topics. A
// request is authorized as a whole or not at all: one uncovered selector
// refuses it. An empty list is covered.
func (g Grants) CoversAll(topics []Topic) bool {
	for _, t := range topics {
		if !g.Covers(t) {
			return false
		}
	}
	return true
}

// Uncovered returns the first selector of topics the grants do not cover,
// and false when they cover all of them.
func (g Grants) Uncovered(topics []Topic) (Topic, bool) {
	for _, t := range topics {
		if !g.Covers(t) {
			return t, true
		}
	}
	return "", false
}

// IsEmpty reports whether the grants cover nothing.
func (g Grants) IsEmpty() bool { return !g.all && len(g.projects) == 0 }

// Selectors returns the grants as selectors: "projects:*" alone, or the
// project topics sorted.
func (g Grants) Selectors() []Topic {
	if g.all {
		return []Topic{AllProjects}
	}
	out := make([]Topic, 0, len(g.projects))
	for id := range g.projects {
		out = append(out, ProjectTopic(id))
	}
	slices.Sort(out)
	return out
}

// Access is what one verified client may do: read the projects its
// Subscribe grants cover (streams, snapshots, replays, queries) and
// broadcast about the projects its Publish grants cover, until Expires.
type Access struct {
	// Subject identifies the client ("sub" of its token); may be empty.
	Subject string
	// Subscribe covers what the client may read.
	Subscribe Grants
	// Publish covers what the client may broadcast about.
	Publish Grants
	// Expires is when the access ends; the zero time means never.
	Expires time.Time
}

// OpenAccess is everyone's access when statusd runs without authorization:
// every project, for reading and publishing, for ever.
func OpenAccess() Access {
	return Access{Subscribe: AllGrants(), Publish: AllGrants()}
}
