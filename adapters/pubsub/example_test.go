package pubsub_test

import (
	"context"
	"fmt"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// The library in a nutshell: the seed's functions on an in-memory bus. A
// LiveView-like subscriber watches one project, a dashboard watches them
// all, and the setup process broadcasts.
func Example() {
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	if err != nil {
		panic(err)
	}
	defer bus.Close(context.Background())

	// subscribe_to_project/1 and subscribe_to_all_projects/0.
	view, _ := bus.NewInbox()
	defer view.Close()
	_ = view.SubscribeToProject("42")
	dashboard, _ := bus.NewInbox()
	defer dashboard.Close()
	_ = dashboard.SubscribeToAllProjects()

	// broadcast_project_update/1 and broadcast_project_error/2.
	at := time.Date(2024, 1, 1, 12, 5, 0, 0, time.UTC)
	p := domain.Project{ID: "42", Name: "my_app", Status: domain.StatusCompiling, UpdatedAt: at}
	_ = bus.BroadcastProjectUpdate(p)
	p.Status = domain.StatusFailed
	_ = bus.BroadcastProjectError(p, "Mix deps.get failed")

	for range 2 {
		ev := <-view.Events()
		fmt.Printf("%s %s %s %q\n", domain.ProjectTopic(ev.Project.ID), ev.Type, ev.Project.Status, ev.Error)
	}
	fmt.Println("dashboard got", (<-dashboard.Events()).Project.Name)

	// unsubscribe_from_project/1.
	view.UnsubscribeFromProject("42")
	// Output:
	// projects:42 project_updated compiling ""
	// projects:42 project_error failed "Mix deps.get failed"
	// dashboard got my_app
}
