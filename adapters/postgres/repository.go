package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// querier is what the repository's statements run on: the pool, or a
// transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Repository is a ports.ProjectRepository in the projects table. It is
// safe for concurrent use.
type Repository struct {
	db  querier
	now func() time.Time
	// lock, when set, takes the project's transaction lock before a
	// write (see LockProject): set inside a Store transaction.
	lock bool
}

var _ ports.ProjectRepository = (*Repository)(nil)

// NewRepository returns the repository on pool. now stamps records; nil
// means time.Now in UTC, to the second, like the memory repository and the
// original records ("2024-01-01T12:05:00Z").
func NewRepository(pool *pgxpool.Pool, now func() time.Time) *Repository {
	return &Repository{db: pool, now: clockOrDefault(now)}
}

func clockOrDefault(now func() time.Time) func() time.Time {
	if now == nil {
		return func() time.Time { return time.Now().UTC().Truncate(time.Second) }
	}
	return now
}

const projectColumns = `id, name, status, code_repo, docs_repo, inserted_at, updated_at`

// Create stores a new project; see ports.ProjectRepository.
func (r *Repository) Create(ctx context.Context, p domain.Project) (domain.Project, error) {
	if p.Status == "" {
		p.Status = domain.StatusPending
	}
	if err := p.Validate(); err != nil {
		return domain.Project{}, err
	}
	if r.lock {
		if err := lockProject(ctx, r.db, p.ID); err != nil {
			return domain.Project{}, err
		}
	}
	now := r.now()
	p.InsertedAt, p.UpdatedAt = now, now
	_, err := r.db.Exec(ctx, `INSERT INTO projects (`+projectColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		p.ID, p.Name, string(p.Status), p.CodeRepo, p.DocsRepo, p.InsertedAt, p.UpdatedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" { // unique_violation
		return domain.Project{}, fmt.Errorf("%w: %q", ports.ErrProjectExists, p.ID)
	}
	if err != nil {
		return domain.Project{}, fmt.Errorf("postgres: create project %q: %w", p.ID, err)
	}
	return normalize(p), nil
}

// Get returns a project; see ports.ProjectRepository.
func (r *Repository) Get(ctx context.Context, id string) (domain.Project, error) {
	p, err := scanProject(r.db.QueryRow(ctx, `SELECT `+projectColumns+` FROM projects WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Project{}, fmt.Errorf("%w: %q", ports.ErrProjectNotFound, id)
	}
	if err != nil {
		return domain.Project{}, fmt.Errorf("postgres: get project %q: %w", id, err)
	}
	return p, nil
}

// UpdateStatus sets a project's status and updated_at; see
// ports.ProjectRepository.
func (r *Repository) UpdateStatus(ctx context.Context, id string, status domain.Status) (domain.Project, error) {
	if err := status.Validate(); err != nil {
		return domain.Project{}, err
	}
	if r.lock {
		if err := lockProject(ctx, r.db, id); err != nil {
			return domain.Project{}, err
		}
	}
	p, err := scanProject(r.db.QueryRow(ctx,
		`UPDATE projects SET status = $2, updated_at = $3 WHERE id = $1 RETURNING `+projectColumns,
		id, string(status), r.now()))
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Project{}, fmt.Errorf("%w: %q", ports.ErrProjectNotFound, id)
	}
	if err != nil {
		return domain.Project{}, fmt.Errorf("postgres: update project %q: %w", id, err)
	}
	return p, nil
}

// List returns every project, by id, at most limit of them (limit <= 0:
// all).
func (r *Repository) List(ctx context.Context, limit int) ([]domain.Project, error) {
	q := `SELECT ` + projectColumns + ` FROM projects ORDER BY id`
	var args []any
	if limit > 0 {
		q += ` LIMIT $1`
		args = append(args, limit)
	}
	rows, err := r.db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres: list projects: %w", err)
	}
	projects := []domain.Project{}
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("postgres: list projects: %w", err)
		}
		projects = append(projects, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres: list projects: %w", err)
	}
	return projects, nil
}

// save stores p as given (an event's record), inserting or replacing the
// row.
func save(ctx context.Context, db querier, p domain.Project) error {
	_, err := db.Exec(ctx, `INSERT INTO projects (`+projectColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO UPDATE SET name = excluded.name, status = excluded.status,
			code_repo = excluded.code_repo, docs_repo = excluded.docs_repo,
			inserted_at = excluded.inserted_at, updated_at = excluded.updated_at`,
		p.ID, p.Name, string(p.Status), p.CodeRepo, p.DocsRepo, p.InsertedAt, p.UpdatedAt)
	if err != nil {
		return fmt.Errorf("postgres: save project %q: %w", p.ID, err)
	}
	return nil
}

func scanProject(row pgx.Row) (domain.Project, error) {
	var p domain.Project
	var status string
	if err := row.Scan(&p.ID, &p.Name, &status, &p.CodeRepo, &p.DocsRepo, &p.InsertedAt, &p.UpdatedAt); err != nil {
		return domain.Project{}, err
	}
	p.Status = domain.Status(status)
	return normalize(p), nil
}

// normalize gives timestamps the form they have once stored: UTC, to the
// microsecond.
func normalize(p domain.Project) domain.Project {
	p.InsertedAt = p.InsertedAt.UTC().Truncate(time.Microsecond)
	p.UpdatedAt = p.UpdatedAt.UTC().Truncate(time.Microsecond)
	return p
}
