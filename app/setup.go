package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// Step is one stage of a project's setup: Status is what the project shows
// while Run works (cloning, fetching_deps, …).
type Step struct {
	Status domain.Status
	Run    func(ctx context.Context, p domain.Project) error
}

// ProjectSetup takes a project through its steps. It is safe for concurrent
// use on different projects.
type ProjectSetup struct {
	repo        ports.ProjectRepository
	broadcaster domain.StatusBroadcaster
	log         *slog.Logger
	tx          ports.Transactor // see WithTransactor
}

// Option configures a ProjectSetup.
type Option func(*ProjectSetup)

// WithTransactor makes every status change and its event one transaction
// of tx (the transactional outbox, adapters/postgres): the repository
// update and the broadcast commit together or not at all, and the event is
// published after the commit, at least once. repo and broadcaster given to
// NewProjectSetup are then not used for status changes.
//
// The seed's promise holds: the pub/sub never blocks or fails a setup
// (publishing happens after the commit, elsewhere). What can fail a step
// now is the database — the update and its event together — as the
// repository update alone could before.
func WithTransactor(tx ports.Transactor) Option {
	return func(s *ProjectSetup) { s.tx = tx }
}

// NewProjectSetup returns the setup flow on repo and broadcaster.
func NewProjectSetup(repo ports.ProjectRepository, broadcaster domain.StatusBroadcaster, logger *slog.Logger, opts ...Option) *ProjectSetup {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &ProjectSetup{repo: repo, broadcaster: broadcaster, log: logger}
	for _, o := range opts {
		o(s)
	}
	return s
}

// StepError is returned by Run when a step fails; the project is then
// failed and the error broadcast.
type StepError struct {
	Status domain.Status
	Err    error
}

// Error says which step failed and why.
func (e *StepError) Error() string { return fmt.Sprintf("%s: %v", e.Status, e.Err) }

// Unwrap returns the step's own error.
func (e *StepError) Unwrap() error { return e.Err }

// Run takes the project projectID through steps: before each step it sets
// the step's status and broadcasts the updated record; after the last it
// sets ready. When a step fails it sets failed and broadcasts a project_error
// with the step's error message, and returns a *StepError. Broadcasting never
// fails the setup: the broadcaster logs its own failures.
func (s *ProjectSetup) Run(ctx context.Context, projectID string, steps []Step) error {
	for _, step := range steps {
		p, err := s.transition(ctx, projectID, step.Status)
		if err != nil {
			return err
		}
		if err := step.Run(ctx, p); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return s.fail(ctx, projectID, &StepError{Status: step.Status, Err: err})
		}
	}
	_, err := s.transition(ctx, projectID, domain.StatusReady)
	return err
}

// transition updates the status, then broadcasts the record as stored.
func (s *ProjectSetup) transition(ctx context.Context, id string, status domain.Status) (domain.Project, error) {
	if s.tx != nil {
		return s.inTx(ctx, id, status, "")
	}
	p, err := s.repo.UpdateStatus(ctx, id, status)
	if err != nil {
		return domain.Project{}, fmt.Errorf("set status %s: %w", status, err)
	}
	if err := s.broadcaster.BroadcastProjectUpdate(p); err != nil {
		// Only invalid input is returned; the record came from our own
		// repository, so this is a bug worth a loud log, not a failed setup.
		s.log.Error("broadcast rejected the project", "project_id", id, "error", err)
	}
	return p, nil
}

func (s *ProjectSetup) fail(ctx context.Context, id string, stepErr *StepError) error {
	reason := stepErr.Err.Error()
	if reason == "" {
		reason = fmt.Sprintf("%s failed", stepErr.Status)
	}
	if s.tx != nil {
		if _, err := s.inTx(ctx, id, domain.StatusFailed, reason); err != nil {
			return errors.Join(stepErr, err)
		}
		return stepErr
	}
	p, err := s.repo.UpdateStatus(ctx, id, domain.StatusFailed)
	if err != nil {
		return errors.Join(stepErr, fmt.Errorf("set status failed: %w", err))
	}
	if err := s.broadcaster.BroadcastProjectError(p, reason); err != nil {
		s.log.Error("broadcast rejected the error", "project_id", id, "error", err)
	}
	return stepErr
}

// inTx sets the status and records its event — a project_error with reason
// when reason is not empty — in one transaction. Nothing is broadcast
// unless both are committed.
func (s *ProjectSetup) inTx(ctx context.Context, id string, status domain.Status, reason string) (domain.Project, error) {
	var p domain.Project
	err := s.tx.InTx(ctx, func(ctx context.Context, repo ports.ProjectRepository, b domain.StatusBroadcaster) error {
		var err error
		if p, err = repo.UpdateStatus(ctx, id, status); err != nil {
			return err
		}
		if reason != "" {
			return b.BroadcastProjectError(p, reason)
		}
		return b.BroadcastProjectUpdate(p)
	})
	if err != nil {
		return domain.Project{}, fmt.Errorf("set status %s: %w", status, err)
	}
	return p, nil
}
