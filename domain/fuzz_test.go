package domain_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// FuzzParseTopic: any text is either a topic — exactly "projects:*", or
// "projects:" and a valid project id — or an error wrapping
// ErrInvalidTopic, never a panic; an accepted topic prints as given, and
// its project id can never forge another topic. The seed corpus is in
// testdata/fuzz/FuzzParseTopic.
func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"projects:*", "projects:42", "projects:", "projects:a:b", "projects:**", "Projects:1", "projects:" + strings.Repeat("x", 129)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topic, err := domain.ParseTopic(s)
		if err != nil {
			if !errors.Is(err, domain.ErrInvalidTopic) {
				t.Fatalf("ParseTopic(%q): error %v does not say invalid topic", s, err)
			}
			if topic != "" {
				t.Fatalf("ParseTopic(%q) returned %q with an error", s, topic)
			}
			return
		}
		if topic.String() != s {
			t.Fatalf("ParseTopic(%q) = %q", s, topic)
		}
		id, isProject := topic.ProjectID()
		switch {
		case topic.IsWildcard():
			if isProject || s != "projects:*" || !topic.Matches("any") {
				t.Fatalf("wildcard %q: ProjectID ok=%v", s, isProject)
			}
		case !isProject:
			t.Fatalf("%q accepted but neither the wildcard nor a project topic", s)
		default:
			if err := domain.ValidateProjectID(id); err != nil {
				t.Fatalf("%q accepted with invalid id %q: %v", s, id, err)
			}
			if strings.ContainsAny(id, ":*") || domain.ProjectTopic(id) != topic || !topic.Matches(id) || topic.Matches(id+"x") {
				t.Fatalf("%q: id %q forges or mismatches", s, id)
			}
		}
	})
}
