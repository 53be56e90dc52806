package postgres_test

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres/pgtest"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

// A Go service that keeps its own *sql.DB broadcasts inside its own
// transaction: its write and the event commit together, and the forwarder
// publishes the event afterwards. With pgx, use Outbox.PgxBroadcaster on a
// pgx.Tx the same way.
func Example_serviceTransaction() {
	ctx := context.Background()
	dbURL, drop := exampleSchema(ctx)
	defer drop()

	// Once per process: the pool (migrations applied), the Bus, and the
	// forwarder from the outbox to the Bus's publisher.
	pool, err := postgres.Open(ctx, dbURL)
	if err != nil {
		panic(err)
	}
	defer pool.Close()
	bus, err := pubsub.NewInMemory(pubsub.Config{}, nil)
	if err != nil {
		panic(err)
	}
	defer bus.Close(ctx)
	fwd, err := postgres.StartForwarder(pool, bus.Publisher(), postgres.ForwarderConfig{}, nil)
	if err != nil {
		panic(err)
	}
	defer fwd.Close() // before the Bus closes
	inbox, _ := bus.NewInbox()
	defer inbox.Close()
	_ = inbox.SubscribeToProject("42")

	// The service's own database handle and transaction.
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		panic(err)
	}
	defer db.Close()
	outbox := postgres.NewOutbox(pubsub.DefaultTopic, nil)

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		panic(err)
	}
	// The project's lock before the first write keeps its events in commit
	// order when other transactions change it at the same time.
	if err := postgres.LockProject(ctx, wsql.TxFromStdSQL(tx), "42"); err != nil {
		panic(err)
	}
	now := time.Date(2024, 1, 1, 12, 5, 0, 0, time.UTC)
	p := domain.Project{ID: "42", Name: "my_app", Status: domain.StatusCompiling, InsertedAt: now, UpdatedAt: now}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO projects (id, name, status, inserted_at, updated_at) VALUES ($1, $2, $3, $4, $5)`,
		p.ID, p.Name, p.Status, p.InsertedAt, p.UpdatedAt); err != nil {
		panic(err)
	}
	if err := outbox.SQLBroadcaster(ctx, tx).BroadcastProjectUpdate(p); err != nil {
		_ = tx.Rollback() // nothing is broadcast
		panic(err)
	}
	if err := tx.Commit(); err != nil {
		panic(err)
	}

	ev := <-inbox.Events()
	fmt.Println(ev.Type, ev.Project.ID, ev.Project.Status)
	// Output: project_updated 42 compiling
}

// exampleSchema creates a schema of its own for the example.
func exampleSchema(ctx context.Context) (string, func()) {
	conn, err := pgx.Connect(ctx, pgtest.ServerURL())
	if err != nil {
		panic(err)
	}
	defer conn.Close(ctx)
	name := fmt.Sprintf("example_%d", time.Now().UnixNano())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		panic(err)
	}
	return pgtest.WithSearchPath(pgtest.ServerURL(), name), func() {
		conn, err := pgx.Connect(ctx, pgtest.ServerURL())
		if err == nil {
			_, _ = conn.Exec(ctx, "DROP SCHEMA "+name+" CASCADE")
			_ = conn.Close(ctx)
		}
	}
}
