package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// storedProjects is the durable side of the API as statusd's database
// wiring presents it (Config.Accept and Config.Projects), kept in memory:
// what counts here is what the HTTP edge lets through to it.
type storedProjects struct {
	mu       sync.Mutex
	accepted []domain.Event
	projects map[string]domain.Project
}

func (s *storedProjects) accept(_ context.Context, ev domain.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted = append(s.accepted, ev)
	s.projects[ev.Project.ID] = ev.Project
	return nil
}

func (s *storedProjects) Projects(context.Context, int) ([]domain.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]domain.Project, 0, len(s.projects))
	for _, p := range s.projects {
		out = append(out, p)
	}
	return out, nil
}

func (s *storedProjects) Project(_ context.Context, id string) (domain.Project, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.projects[id]
	if !ok {
		return domain.Project{}, ports.ErrProjectNotFound
	}
	return p, nil
}

// With a database (--database-url) the grants hold as they do in memory:
// a POST outside the token's publish grants is refused before anything is
// stored, and the stored projects are listed and read only where the
// token's subscribe grants reach.
func TestDurableAPIObeysGrants(t *testing.T) {
	store := &storedProjects{projects: map[string]domain.Project{}}
	v := newVerifier(t)
	g := newGateway(t, func(_ *pubsub.Config, c *httpapi.Config) {
		c.Auth, c.Accept, c.Projects = v, store.accept, store
	})
	admin := mint(t, []string{"projects:*"}, []string{"projects:*"}, time.Hour)
	onlyA := mint(t, []string{"projects:A"}, []string{"projects:A"}, time.Hour)

	resp, body := g.do(t, http.MethodPost, "/events", onlyA, envelope("B", 1, ""))
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	store.mu.Lock()
	assert.Empty(t, store.accepted, "a refused POST is never stored")
	store.mu.Unlock()

	for _, id := range []string{"A", "B"} {
		resp, body = g.do(t, http.MethodPost, "/events", admin, envelope(id, 1, ""))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	}
	resp, body = g.do(t, http.MethodPost, "/events", onlyA, envelope("A", 2, ""))
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)

	resp, body = g.do(t, http.MethodGet, "/projects", onlyA, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	var listed []domain.Project
	require.NoError(t, json.Unmarshal([]byte(body), &listed))
	require.Len(t, listed, 1, body)
	assert.Equal(t, "A", listed[0].ID)

	resp, body = g.do(t, http.MethodGet, "/projects/B", onlyA, "")
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, body)
	resp, body = g.do(t, http.MethodGet, "/projects/B", admin, "")
	assert.Equal(t, http.StatusOK, resp.StatusCode, body)
	resp, body = g.do(t, http.MethodGet, "/projects", "", "")
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, body)
}
