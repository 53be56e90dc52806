package httpapi

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// ProjectStore serves GET /projects and GET /projects/{id} from a database
// instead of the hub's latest events (statusd with --database-url), so the
// answers survive restarts. *postgres.Store implements it.
type ProjectStore interface {
	// Projects returns every project by id, at most limit (<= 0: all).
	Projects(ctx context.Context, limit int) ([]domain.Project, error)
	// Project returns one project, or an error wrapping
	// ports.ErrProjectNotFound.
	Project(ctx context.Context, id string) (domain.Project, error)
}

// accept hands a valid POSTed event to Config.Accept and maps its answer:
// nil is 202 (the event is durable), an invalid event 400, anything else
// 503 — the event was not stored, and the client may retry.
func (s *Server) accept(w http.ResponseWriter, r *http.Request, ev domain.Event) {
	err := s.cfg.Accept(r.Context(), ev)
	switch {
	case err == nil:
		writeJSON(w, http.StatusAccepted, acceptedBody{Topic: ev.Topic().String()})
	case errors.Is(err, domain.ErrInvalidEvent):
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		s.log.Warn("POST /events: event not stored", "project_id", ev.Project.ID, "error", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "event not stored: database unavailable; retry later")
	}
}

func (s *Server) listStoredProjects(w http.ResponseWriter, r *http.Request) {
	projects, err := s.cfg.Projects.Projects(r.Context(), 0)
	if err != nil {
		s.log.Warn("GET /projects failed", "error", err)
		writeError(w, http.StatusServiceUnavailable, "database unavailable; retry later")
		return
	}
	readable := s.access(r).Subscribe
	projects = slices.DeleteFunc(projects, func(p domain.Project) bool { return !readable.CoversProject(p.ID) })
	writeJSON(w, http.StatusOK, projects)
}

func (s *Server) getStoredProject(w http.ResponseWriter, r *http.Request, id string) {
	p, err := s.cfg.Projects.Project(r.Context(), id)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, p)
	case errors.Is(err, ports.ErrProjectNotFound):
		writeError(w, http.StatusNotFound, "no project "+id)
	default:
		s.log.Warn("GET /projects/{id} failed", "project_id", id, "error", err)
		writeError(w, http.StatusServiceUnavailable, "database unavailable; retry later")
	}
}
