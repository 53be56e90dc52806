package domain

import (
	"errors"
	"fmt"
	"time"
)

// Status is the setup stage a project is in. On the wire it is a lower-case
// word. The set is open: the known stages are declared below, and any other
// lower-case word (a stage added by a newer setup process) is carried through
// unchanged.
type Status string

// The setup stages known to this version, in the order a successful setup
// goes through them; StatusFailed ends a setup that did not succeed.
const (
	StatusPending        Status = "pending"
	StatusCloning        Status = "cloning"
	StatusFetchingDeps   Status = "fetching_deps"
	StatusCompiling      Status = "compiling"
	StatusGeneratingDocs Status = "generating_docs"
	StatusReady          Status = "ready"
	StatusFailed         Status = "failed"
)

// Validate reports whether s is a lower-case word ([a-z][a-z0-9_]*, at most
// 64 characters). (A loop, not a regular expression: every event is
// validated twice on its way through statusd.)
func (s Status) Validate() error {
	ok := len(s) >= 1 && len(s) <= 64 && s[0] >= 'a' && s[0] <= 'z'
	for i := 1; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_'
	}
	if !ok {
		return fmt.Errorf("%w: status %q is not a lower-case word", ErrInvalidProject, s)
	}
	return nil
}

// Known reports whether s is one of the stages declared in this package.
func (s Status) Known() bool {
	switch s {
	case StatusPending, StatusCloning, StatusFetchingDeps, StatusCompiling,
		StatusGeneratingDocs, StatusReady, StatusFailed:
		return true
	}
	return false
}

// Project is the full record of a project as the setup process stores it.
// Subscribers receive it whole, so they never need to query it again.
type Project struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Status     Status    `json:"status"`
	CodeRepo   string    `json:"code_repo"`
	DocsRepo   string    `json:"docs_repo"`
	InsertedAt time.Time `json:"inserted_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// ErrInvalidProject is wrapped by every validation error about a project or
// its id.
var ErrInvalidProject = errors.New("invalid project")

const maxProjectIDLen = 128

// ValidateProjectID reports whether id is a valid project id: 1 to 128
// characters out of [A-Za-z0-9._-]. The restriction is what makes topics
// safe: an id can never contain ':' or '*' and so never forge another topic
// or the wildcard.
func ValidateProjectID(id string) error {
	if id == "" {
		return fmt.Errorf("%w: project id is missing", ErrInvalidProject)
	}
	if len(id) > maxProjectIDLen {
		return fmt.Errorf("%w: project id is longer than %d characters", ErrInvalidProject, maxProjectIDLen)
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return fmt.Errorf("%w: project id %q may only contain A-Z a-z 0-9 . _ -", ErrInvalidProject, id)
		}
	}
	return nil
}

func idByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-'
}

// Validate checks what every subscriber relies on: a valid id and a status
// that is a lower-case word.
func (p Project) Validate() error {
	if err := ValidateProjectID(p.ID); err != nil {
		return err
	}
	return p.Status.Validate()
}
