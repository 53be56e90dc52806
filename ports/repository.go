package ports

import (
	"context"
	"errors"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// ErrProjectNotFound is returned by a ProjectRepository for an unknown id.
var ErrProjectNotFound = errors.New("project not found")

// ProjectRepository stores projects: the database the setup process updates
// before it broadcasts. Implementations are safe for concurrent use, and
// every method returns the record as stored, so it can be broadcast as is.
type ProjectRepository interface {
	// Create stores a new project. It sets InsertedAt and UpdatedAt, and
	// Status to pending when it is empty.
	Create(ctx context.Context, p domain.Project) (domain.Project, error)
	// Get returns a project, or ErrProjectNotFound.
	Get(ctx context.Context, id string) (domain.Project, error)
	// UpdateStatus sets a project's status and UpdatedAt, and returns the
	// updated record, or ErrProjectNotFound.
	UpdateStatus(ctx context.Context, id string, status domain.Status) (domain.Project, error)
}
