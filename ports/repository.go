package ports

import (
	"context"
	"errors"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// ErrProjectNotFound is returned by a ProjectRepository for an unknown id.
var ErrProjectNotFound = errors.New("project not found")

// ErrProjectExists is returned by ProjectRepository.Create for an id that
// is already stored.
var ErrProjectExists = errors.New("project already exists")

// ProjectRepository stores projects: the database the setup process updates
// before it broadcasts. Implementations are safe for concurrent use, and
// every method returns the record as stored, so it can be broadcast as is.
type ProjectRepository interface {
	// Create stores a new project. It sets InsertedAt and UpdatedAt, and
	// Status to pending when it is empty. An id already stored is
	// ErrProjectExists.
	Create(ctx context.Context, p domain.Project) (domain.Project, error)
	// Get returns a project, or ErrProjectNotFound.
	Get(ctx context.Context, id string) (domain.Project, error)
	// UpdateStatus sets a project's status and UpdatedAt, and returns the
	// updated record, or ErrProjectNotFound.
	UpdateStatus(ctx context.Context, id string, status domain.Status) (domain.Project, error)
}

// Transactor runs units of work in one database transaction: what fn
// writes through repo and broadcasts through broadcaster commits together,
// or, when fn returns an error or the commit fails, not at all — a failed
// transaction broadcasts nothing. The events are published after the
// commit, at least once, in commit order per project (the transactional
// outbox).
//
// Inside fn, broadcaster's methods write to the transaction and return its
// errors (a database failure, besides invalid input); fn returns them so
// that the transaction rolls back. repo and broadcaster must not be used
// after fn returns. Safe for concurrent use.
type Transactor interface {
	InTx(ctx context.Context, fn func(ctx context.Context, repo ProjectRepository, broadcaster domain.StatusBroadcaster) error) error
}
