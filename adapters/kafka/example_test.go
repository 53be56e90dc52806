package kafka_test

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// A backend that consumes the events from Kafka with a consumer group of
// its own, through the same subscription API as everyone else. The group's
// offsets survive restarts: a new member resumes after the last event the
// group consumed. (kfake, an in-process broker, stands in for your
// cluster.)
func ExampleNew_consumerGroup() {
	cluster, err := kfake.NewCluster(kfake.SeedTopics(3, pubsub.DefaultTopic))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// statusd, or any Bus, broadcasts a project's setup.
	statusd, err := kafka.New(pubsub.Config{}, kafka.Config{Brokers: brokers}, nil)
	if err != nil {
		panic(err)
	}
	p := domain.Project{ID: "42", Name: "my_app", Status: domain.StatusCloning}
	_ = statusd.BroadcastProjectUpdate(p)
	p.Status = domain.StatusCompiling
	_ = statusd.BroadcastProjectUpdate(p)
	p.Status = domain.StatusFailed
	_ = statusd.BroadcastProjectError(p, "Mix deps.get failed")
	_ = statusd.Close(ctx) // flushes the outbox

	// The backend: a named consumer group, reading from the oldest offset
	// the first time the group runs.
	billing, err := kafka.New(pubsub.Config{}, kafka.Config{
		Brokers:       brokers,
		ConsumerGroup: "billing",
		InitialOffset: kafka.OffsetOldest,
	}, nil)
	if err != nil {
		panic(err)
	}
	defer billing.Close(ctx)
	inbox, _ := billing.NewInbox()
	defer inbox.Close()
	// Nothing is committed before the first subscription, nor anything
	// this loop has not received.
	_ = inbox.SubscribeToAllProjects()

	for range 3 {
		ev := <-inbox.Events()
		fmt.Printf("%s %s %s %q\n", ev.Type, ev.Project.ID, ev.Project.Status, ev.Error)
	}
	// Output:
	// project_updated 42 cloning ""
	// project_updated 42 compiling ""
	// project_error 42 failed "Mix deps.get failed"
}
