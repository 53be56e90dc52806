package domain_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestParseGrants(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want []domain.Topic
		ok   bool
	}{
		{"nil grants nothing", nil, []domain.Topic{}, true},
		{"empty grants nothing", []string{}, []domain.Topic{}, true},
		{"one project", []string{"projects:42"}, []domain.Topic{"projects:42"}, true},
		{"several, sorted, deduplicated", []string{"projects:b", "projects:a", "projects:b"}, []domain.Topic{"projects:a", "projects:b"}, true},
		{"wildcard", []string{"projects:*"}, []domain.Topic{"projects:*"}, true},
		{"wildcard absorbs projects", []string{"projects:a", "projects:*"}, []domain.Topic{"projects:*"}, true},
		{"empty string", []string{""}, nil, false},
		{"no prefix", []string{"42"}, nil, false},
		{"other prefix", []string{"users:42"}, nil, false},
		{"empty id", []string{"projects:"}, nil, false},
		{"prefix wildcard", []string{"projects:a*"}, nil, false},
		{"global wildcard", []string{"*"}, nil, false},
		{"nested topic", []string{"projects:a:b"}, nil, false},
		{"one bad among good", []string{"projects:a", "projects:a b"}, nil, false},
		{"upper-case prefix", []string{"PROJECTS:a"}, nil, false},
		{"trailing space", []string{"projects:a "}, nil, false},
		{"id too long", []string{"projects:" + strings.Repeat("x", 129)}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := domain.ParseGrants(tt.in)
			if !tt.ok {
				assert.ErrorIs(t, err, domain.ErrInvalidGrant)
				assert.ErrorIs(t, err, domain.ErrInvalidTopic)
				assert.True(t, g.IsEmpty(), "an invalid set grants nothing")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, g.Selectors())
			assert.Equal(t, len(tt.want) == 0, g.IsEmpty())
		})
	}
}

func TestGrantsCover(t *testing.T) {
	grants := func(sel ...string) domain.Grants {
		g, err := domain.ParseGrants(sel)
		require.NoError(t, err)
		return g
	}
	a := domain.ProjectTopic("A")
	b := domain.ProjectTopic("B")
	tests := []struct {
		name      string
		grants    domain.Grants
		requested []domain.Topic
		covered   bool
		uncovered domain.Topic
	}{
		{"A covers A", grants("projects:A"), []domain.Topic{a}, true, ""},
		{"A does not cover B", grants("projects:A"), []domain.Topic{b}, false, b},
		{"A does not cover A and B", grants("projects:A"), []domain.Topic{a, b}, false, b},
		{"A does not cover the wildcard", grants("projects:A"), []domain.Topic{domain.AllProjects}, false, domain.AllProjects},
		{"A and B do not cover the wildcard", grants("projects:A", "projects:B"), []domain.Topic{domain.AllProjects}, false, domain.AllProjects},
		{"A and B cover both", grants("projects:A", "projects:B"), []domain.Topic{b, a}, true, ""},
		{"wildcard covers the wildcard", grants("projects:*"), []domain.Topic{domain.AllProjects}, true, ""},
		{"wildcard covers any project", grants("projects:*"), []domain.Topic{a, b, domain.ProjectTopic("zz-9")}, true, ""},
		{"nothing covers nothing but the empty request", grants(), []domain.Topic{}, true, ""},
		{"nothing covers no project", grants(), []domain.Topic{a}, false, a},
		{"nothing covers no wildcard", grants(), []domain.Topic{domain.AllProjects}, false, domain.AllProjects},
		{"ids are case-sensitive", grants("projects:A"), []domain.Topic{"projects:a"}, false, "projects:a"},
		{"an invalid topic is never covered", grants("projects:*"), []domain.Topic{"projects:a b"}, false, "projects:a b"},
		{"a non-topic is never covered", grants("projects:*"), []domain.Topic{"users:1"}, false, "users:1"},
		{"an empty topic is never covered", grants("projects:*"), []domain.Topic{""}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.covered, tt.grants.CoversAll(tt.requested))
			u, found := tt.grants.Uncovered(tt.requested)
			assert.Equal(t, !tt.covered, found)
			assert.Equal(t, tt.uncovered, u)
		})
	}
}

func TestGrantsCoversProject(t *testing.T) {
	g, err := domain.ParseGrants([]string{"projects:A"})
	require.NoError(t, err)
	assert.True(t, g.CoversProject("A"))
	assert.False(t, g.CoversProject("B"))
	assert.False(t, g.CoversProject("*"))
	assert.False(t, domain.Grants{}.CoversProject("A"), "the zero value grants nothing")
	assert.True(t, domain.AllGrants().CoversProject("anything"))
	open := domain.OpenAccess()
	assert.True(t, open.Subscribe.Covers(domain.AllProjects))
	assert.True(t, open.Publish.CoversProject("x"))
	assert.True(t, open.Expires.IsZero())
}

// FuzzParseGrants: whatever a token's claim holds, parsing never panics,
// and what it accepts means exactly what it says: each accepted selector
// parses as a topic and is covered, the wildcard is covered only when
// granted, and a project is covered only when granted by id or wildcard.
func FuzzParseGrants(f *testing.F) {
	for _, seed := range [][2]string{
		{"projects:*", ""}, {"projects:42", "projects:43"}, {"projects:", "x"},
		{"projects:a*", "projects:*x"}, {"projects:a:b", ""}, {"", ""},
		{"PROJECTS:a", "projects:a\x00"}, {"projects:café", "projects:a b"},
	} {
		f.Add(seed[0], seed[1], "A")
	}
	f.Fuzz(func(t *testing.T, s1, s2, probe string) {
		g, err := domain.ParseGrants([]string{s1, s2})
		if err != nil {
			require.ErrorIs(t, err, domain.ErrInvalidGrant)
			require.True(t, g.IsEmpty())
			return
		}
		wild := s1 == "projects:*" || s2 == "projects:*"
		require.Equal(t, wild, g.Covers(domain.AllProjects))
		for _, s := range []string{s1, s2} {
			topic, err := domain.ParseTopic(s)
			require.NoError(t, err, "accepted %q", s)
			require.True(t, g.Covers(topic))
		}
		want := wild || (domain.ValidateProjectID(probe) == nil &&
			(s1 == "projects:"+probe || s2 == "projects:"+probe))
		require.Equal(t, want, g.Covers(domain.ProjectTopic(probe)), "probe %q", probe)
	})
}
