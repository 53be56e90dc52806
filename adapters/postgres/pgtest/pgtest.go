// Package pgtest gives tests a PostgreSQL schema of their own: a fresh
// schema per test in the server at $STATUSBROADCASTER_TEST_DATABASE_URL
// (default postgres://postgres@127.0.0.1:5432/test), selected through the
// connection's search_path, with the migrations applied, dropped when the
// test ends. Tests in parallel, and test packages run at the same time,
// never see each other's rows.
//
// Where no PostgreSQL answers, Require skips the test with one line saying
// how to run it — unless CI=true, where it fails: CI must run them.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/postgres"
)

// EnvURL names the variable holding the server tests use.
const EnvURL = "STATUSBROADCASTER_TEST_DATABASE_URL"

// DefaultURL is the server tests use when EnvURL is not set: the one every
// development and CI machine runs.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// ServerURL returns the URL of the test server.
func ServerURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

var (
	probeOnce sync.Once
	probeErr  error
)

// Available reports whether the test server answers (checked once).
func Available() error {
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			probeErr = err
			return
		}
		defer conn.Close(context.Background())
		probeErr = conn.Ping(ctx)
	})
	return probeErr
}

// SkipMessage is the one line a test skipped for want of PostgreSQL logs.
func SkipMessage(err error) string {
	return fmt.Sprintf("SKIPPING THE POSTGRESQL TESTS: no PostgreSQL at %s (%s); run one (trust auth, database test) or set %s; with CI=true this fails instead",
		redact(ServerURL()), strings.Join(strings.Fields(err.Error()), " "), EnvURL)
}

var announce sync.Once

// Require skips t (fails it under CI=true) when no PostgreSQL answers. The
// skip is also said once per test binary on stderr, so that a run without
// -v shows it.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true: %s", SkipMessage(err))
		}
		announce.Do(func() { fmt.Fprintln(os.Stderr, "!!!!!!!! "+SkipMessage(err)) })
		t.Skip(SkipMessage(err))
	}
}

// Schema creates a fresh schema, applies the migrations in it, and returns
// a database URL whose connections use it. The schema is dropped when t
// ends.
func Schema(t testing.TB) string {
	t.Helper()
	Require(t)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `CREATE SCHEMA `+name); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Logf("pgtest: dropping schema %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, `DROP SCHEMA `+name+` CASCADE`); err != nil {
			t.Logf("pgtest: dropping schema %s: %v", name, err)
		}
	})
	u := WithSearchPath(ServerURL(), name)
	pool := Pool(t, u)
	if err := postgres.Migrate(ctx, pool); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// WithSearchPath returns dbURL with its connections' search_path set.
func WithSearchPath(dbURL, schema string) string {
	u, err := url.Parse(dbURL)
	if err != nil || u.Scheme == "" {
		return dbURL + " search_path=" + schema
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Pool returns a pool on dbURL, closed when t ends.
func Pool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxx")
			return u.String()
		}
	}
	return strings.TrimSpace(s)
}
