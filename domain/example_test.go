package domain_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func ExampleParseTopic() {
	for _, s := range []string{"projects:*", "projects:my_app", "projects:a:b", "project:my_app"} {
		t, err := domain.ParseTopic(s)
		if err != nil {
			fmt.Println("rejected:", s)
			continue
		}
		fmt.Println(t, "wildcard:", t.IsWildcard(), "matches my_app:", t.Matches("my_app"))
	}
	// Output:
	// projects:* wildcard: true matches my_app: true
	// projects:my_app wildcard: false matches my_app: true
	// rejected: projects:a:b
	// rejected: project:my_app
}

func ExampleNewProjectError() {
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	ev, err := domain.NewProjectError(domain.Project{
		ID: "uuid", Name: "my_app", Status: domain.StatusFailed,
		CodeRepo: "https://github.com/user/my_app", DocsRepo: "https://github.com/user/my_app_docs",
		InsertedAt: at, UpdatedAt: at.Add(5 * time.Minute),
	}, "Mix deps.get failed")
	if err != nil {
		panic(err)
	}
	data, _ := json.Marshal(ev)
	fmt.Println(ev.Topic())
	fmt.Println(string(data))
	// Output:
	// projects:uuid
	// {"event":"project_error","project":{"id":"uuid","name":"my_app","status":"failed","code_repo":"https://github.com/user/my_app","docs_repo":"https://github.com/user/my_app_docs","inserted_at":"2024-01-01T12:00:00Z","updated_at":"2024-01-01T12:05:00Z"},"error":"Mix deps.get failed"}
}
