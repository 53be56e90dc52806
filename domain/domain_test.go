package domain_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestValidateProjectID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"lower letters", "abc", true},
		{"one character", "a", true},
		{"every allowed class", "Az09._-", true},
		{"uuid", "5f0c6b1e-3b9a-4c1e-9a57-1f0f3c2d7e11", true},
		{"128 characters", strings.Repeat("x", 128), true},
		{"empty", "", false},
		{"129 characters", strings.Repeat("x", 129), false},
		{"colon forges a topic", "a:b", false},
		{"star forges the wildcard", "*", false},
		{"star inside", "a*", false},
		{"slash", "a/b", false},
		{"space", "a b", false},
		{"leading space", " a", false},
		{"newline", "a\n", false},
		{"non-ASCII letter", "café", false},
		{"NUL", "a\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := domain.ValidateProjectID(tt.id)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, domain.ErrInvalidProject)
		})
	}
}

func TestProjectTopic(t *testing.T) {
	assert.Equal(t, domain.Topic("projects:abc-1"), domain.ProjectTopic("abc-1"))
	assert.Equal(t, "projects:abc-1", domain.ProjectTopic("abc-1").String())
	assert.Equal(t, domain.Topic("projects:*"), domain.AllProjects)
}

func TestParseTopic(t *testing.T) {
	tests := []struct {
		in   string
		want domain.Topic
		ok   bool
	}{
		{"projects:*", domain.AllProjects, true},
		{"projects:abc", domain.ProjectTopic("abc"), true},
		{"projects:My.App_2-x", domain.ProjectTopic("My.App_2-x"), true},
		{"projects:" + strings.Repeat("a", 128), domain.ProjectTopic(strings.Repeat("a", 128)), true},
		{"projects:" + strings.Repeat("a", 129), "", false},
		{"projects:", "", false},
		{"projects:a:b", "", false},
		{"projects:**", "", false},
		{"projects:a*", "", false},
		{"projects:*a", "", false},
		{"projects:a b", "", false},
		{"projects:a/b", "", false},
		{"project:a", "", false},
		{"Projects:a", "", false},
		{"a", "", false},
		{"*", "", false},
		{"", "", false},
		{" projects:a", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := domain.ParseTopic(tt.in)
			if !tt.ok {
				require.ErrorIs(t, err, domain.ErrInvalidTopic)
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseTopicInvalidIDWrapsInvalidProject(t *testing.T) {
	_, err := domain.ParseTopic("projects:a:b")
	require.ErrorIs(t, err, domain.ErrInvalidTopic)
	assert.ErrorIs(t, err, domain.ErrInvalidProject)
}

func TestTopicAccessors(t *testing.T) {
	tests := []struct {
		topic     domain.Topic
		wildcard  bool
		id        string
		hasID     bool
		matchesA  bool
		matchesB  bool
		matchesAB bool // project "a:b" (not a valid id, but Matches must not be fooled)
	}{
		{domain.AllProjects, true, "", false, true, true, true},
		{domain.ProjectTopic("a"), false, "a", true, true, false, false},
		{domain.ProjectTopic("b"), false, "b", true, false, true, false},
		{domain.Topic("projects:"), false, "", false, false, false, false},
		{domain.Topic("other:a"), false, "", false, false, false, false},
		{domain.Topic(""), false, "", false, false, false, false},
	}
	for _, tt := range tests {
		t.Run(string(tt.topic), func(t *testing.T) {
			assert.Equal(t, tt.wildcard, tt.topic.IsWildcard())
			id, ok := tt.topic.ProjectID()
			assert.Equal(t, tt.hasID, ok)
			assert.Equal(t, tt.id, id)
			assert.Equal(t, tt.matchesA, tt.topic.Matches("a"))
			assert.Equal(t, tt.matchesB, tt.topic.Matches("b"))
			assert.Equal(t, tt.matchesAB, tt.topic.Matches("a:b"))
		})
	}
}

func TestTopicMatchesIsExact(t *testing.T) {
	// A project topic must not match ids it is a prefix or suffix of.
	topic := domain.ProjectTopic("app")
	assert.True(t, topic.Matches("app"))
	assert.False(t, topic.Matches("app2"))
	assert.False(t, topic.Matches("ap"))
	assert.False(t, topic.Matches("APP"))
	assert.False(t, topic.Matches(""))
}

func TestStatusValidate(t *testing.T) {
	tests := []struct {
		status domain.Status
		ok     bool
	}{
		{domain.StatusPending, true},
		{domain.StatusCloning, true},
		{domain.StatusFetchingDeps, true},
		{domain.StatusCompiling, true},
		{domain.StatusGeneratingDocs, true},
		{domain.StatusReady, true},
		{domain.StatusFailed, true},
		{"running_tests", true}, // unknown stages are carried through
		{"stage2", true},
		{domain.Status("a" + strings.Repeat("b", 63)), true},
		{domain.Status("a" + strings.Repeat("b", 64)), false},
		{"Compiling", false},
		{"COMPILING", false},
		{"", false},
		{"2fast", false},
		{"_private", false},
		{"fetching-deps", false},
		{"fetching deps", false},
		{":compiling", false},
		{"compiling\n", false},
		{"caf\u00e9", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.status), func(t *testing.T) {
			err := tt.status.Validate()
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, domain.ErrInvalidProject)
		})
	}
}

func TestStatusKnown(t *testing.T) {
	for _, s := range []domain.Status{
		domain.StatusPending, domain.StatusCloning, domain.StatusFetchingDeps, domain.StatusCompiling,
		domain.StatusGeneratingDocs, domain.StatusReady, domain.StatusFailed,
	} {
		assert.True(t, s.Known(), s)
	}
	for _, s := range []domain.Status{"running_tests", "", "Compiling", "unknown"} {
		assert.False(t, s.Known(), s)
	}
	// The wire words are those of the original module.
	assert.Equal(t, domain.Status("fetching_deps"), domain.StatusFetchingDeps)
	assert.Equal(t, domain.Status("generating_docs"), domain.StatusGeneratingDocs)
}

func TestProjectValidate(t *testing.T) {
	valid := seedProject(domain.StatusCompiling)
	require.NoError(t, valid.Validate())

	badID := valid
	badID.ID = "a:b"
	assert.ErrorIs(t, badID.Validate(), domain.ErrInvalidProject)

	badStatus := valid
	badStatus.Status = "Compiling"
	assert.ErrorIs(t, badStatus.Validate(), domain.ErrInvalidProject)

	// Name and repositories are free text; only the id and status are checked.
	free := valid
	free.Name, free.CodeRepo, free.DocsRepo = "", "", ""
	assert.NoError(t, free.Validate())
}

// seedProject is the project of the seed's message formats.
func seedProject(status domain.Status) domain.Project {
	return domain.Project{
		ID:         "uuid",
		Name:       "my_app",
		Status:     status,
		CodeRepo:   "https://github.com/user/my_app",
		DocsRepo:   "https://github.com/user/my_app_docs",
		InsertedAt: time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC),
		UpdatedAt:  time.Date(2024, 1, 1, 12, 5, 0, 0, time.UTC),
	}
}

const (
	goldenProject = `{"id":"uuid","name":"my_app","status":"%s","code_repo":"https://github.com/user/my_app","docs_repo":"https://github.com/user/my_app_docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"}`
	goldenUpdated = `{"event":"project_updated","project":` + goldenProject + `}`
	goldenError   = `{"event":"project_error","project":` + goldenProject + `,"error":"Mix deps.get failed"}`
)

func TestEventJSONMatchesSeed(t *testing.T) {
	updated, err := domain.NewProjectUpdated(seedProject(domain.StatusCompiling))
	require.NoError(t, err)
	data, err := json.Marshal(updated)
	require.NoError(t, err)
	assert.Equal(t, strings.Replace(goldenUpdated, "%s", "compiling", 1), string(data))
	assert.NotContains(t, string(data), `"error"`)

	failed, err := domain.NewProjectError(seedProject(domain.StatusFailed), "Mix deps.get failed")
	require.NoError(t, err)
	data, err = json.Marshal(failed)
	require.NoError(t, err)
	assert.Equal(t, strings.Replace(goldenError, "%s", "failed", 1), string(data))
}

func TestEventJSONRoundTrip(t *testing.T) {
	for _, golden := range []string{
		strings.Replace(goldenUpdated, "%s", "compiling", 1),
		strings.Replace(goldenError, "%s", "failed", 1),
	} {
		var ev domain.Event
		require.NoError(t, json.Unmarshal([]byte(golden), &ev))
		require.NoError(t, ev.Validate())
		data, err := json.Marshal(ev)
		require.NoError(t, err)
		assert.Equal(t, golden, string(data))
	}
}

func TestNewProjectUpdated(t *testing.T) {
	p := seedProject(domain.StatusCompiling)
	ev, err := domain.NewProjectUpdated(p)
	require.NoError(t, err)
	assert.Equal(t, domain.EventProjectUpdated, ev.Type)
	assert.Equal(t, p, ev.Project)
	assert.Empty(t, ev.Error)
	assert.Equal(t, domain.ProjectTopic("uuid"), ev.Topic())
}

func TestNewProjectError(t *testing.T) {
	p := seedProject(domain.StatusFailed)
	ev, err := domain.NewProjectError(p, "Mix deps.get failed")
	require.NoError(t, err)
	assert.Equal(t, domain.EventProjectError, ev.Type)
	assert.Equal(t, p, ev.Project)
	assert.Equal(t, "Mix deps.get failed", ev.Error)
	assert.Equal(t, domain.ProjectTopic("uuid"), ev.Topic())
}

func TestConstructorsRejectInvalidInput(t *testing.T) {
	badID := seedProject(domain.StatusCompiling)
	badID.ID = "projects:*"
	badStatus := seedProject("Compiling")

	tests := []struct {
		name         string
		build        func() (domain.Event, error)
		aboutProject bool
	}{
		{"updated, bad id", func() (domain.Event, error) { return domain.NewProjectUpdated(badID) }, true},
		{"updated, empty id", func() (domain.Event, error) { return domain.NewProjectUpdated(domain.Project{Status: "ready"}) }, true},
		{"updated, bad status", func() (domain.Event, error) { return domain.NewProjectUpdated(badStatus) }, true},
		{"error, bad id", func() (domain.Event, error) { return domain.NewProjectError(badID, "boom") }, true},
		{"error, empty reason", func() (domain.Event, error) {
			return domain.NewProjectError(seedProject(domain.StatusFailed), "")
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.build()
			require.ErrorIs(t, err, domain.ErrInvalidEvent)
			if tt.aboutProject {
				assert.ErrorIs(t, err, domain.ErrInvalidProject)
			} else {
				assert.NotErrorIs(t, err, domain.ErrInvalidProject)
			}
		})
	}
}

func TestEventValidate(t *testing.T) {
	ok := seedProject(domain.StatusReady)
	tests := []struct {
		name         string
		ev           domain.Event
		valid        bool
		aboutProject bool
	}{
		{"updated", domain.Event{Type: domain.EventProjectUpdated, Project: ok}, true, false},
		{"error", domain.Event{Type: domain.EventProjectError, Project: ok, Error: "x"}, true, false},
		{"updated with error", domain.Event{Type: domain.EventProjectUpdated, Project: ok, Error: "x"}, false, false},
		{"error without error", domain.Event{Type: domain.EventProjectError, Project: ok}, false, false},
		{"missing type", domain.Event{Project: ok}, false, false},
		{"unknown type", domain.Event{Type: "project_deleted", Project: ok}, false, false},
		{"type in wrong case", domain.Event{Type: "Project_Updated", Project: ok}, false, false},
		{"zero project", domain.Event{Type: domain.EventProjectUpdated}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.ev.Validate()
			if tt.valid {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, domain.ErrInvalidEvent)
			if tt.aboutProject {
				assert.ErrorIs(t, err, domain.ErrInvalidProject)
			}
		})
	}
}

func TestEventTypeValidate(t *testing.T) {
	assert.NoError(t, domain.EventProjectUpdated.Validate())
	assert.NoError(t, domain.EventProjectError.Validate())
	assert.ErrorIs(t, domain.EventType("").Validate(), domain.ErrInvalidEvent)
	assert.ErrorIs(t, domain.EventType("updated").Validate(), domain.ErrInvalidEvent)
}
