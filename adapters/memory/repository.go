// Package memory holds an in-memory ProjectRepository: the database of the
// demo and of tests, with the same contract as a real one.
package memory

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// Repository is a ports.ProjectRepository in a map. It is safe for
// concurrent use.
type Repository struct {
	now func() time.Time

	mu       sync.RWMutex
	projects map[string]domain.Project
}

var _ ports.ProjectRepository = (*Repository)(nil)

// NewRepository returns an empty repository. now stamps records; nil means
// time.Now in UTC, to the second, like the original records
// ("2024-01-01T12:05:00Z").
func NewRepository(now func() time.Time) *Repository {
	if now == nil {
		now = func() time.Time { return time.Now().UTC().Truncate(time.Second) }
	}
	return &Repository{now: now, projects: make(map[string]domain.Project)}
}

// Create stores a new project; see ports.ProjectRepository.
func (r *Repository) Create(_ context.Context, p domain.Project) (domain.Project, error) {
	if p.Status == "" {
		p.Status = domain.StatusPending
	}
	if err := p.Validate(); err != nil {
		return domain.Project{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.projects[p.ID]; ok {
		return domain.Project{}, fmt.Errorf("%w: %q", ports.ErrProjectExists, p.ID)
	}
	now := r.now()
	p.InsertedAt, p.UpdatedAt = now, now
	r.projects[p.ID] = p
	return p, nil
}

// Get returns a project; see ports.ProjectRepository.
func (r *Repository) Get(_ context.Context, id string) (domain.Project, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.projects[id]
	if !ok {
		return domain.Project{}, fmt.Errorf("%w: %q", ports.ErrProjectNotFound, id)
	}
	return p, nil
}

// UpdateStatus sets a project's status; see ports.ProjectRepository.
func (r *Repository) UpdateStatus(_ context.Context, id string, status domain.Status) (domain.Project, error) {
	if err := status.Validate(); err != nil {
		return domain.Project{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.projects[id]
	if !ok {
		return domain.Project{}, fmt.Errorf("%w: %q", ports.ErrProjectNotFound, id)
	}
	p.Status = status
	p.UpdatedAt = r.now()
	r.projects[id] = p
	return p, nil
}
