// Command statusd is the statusbroadcaster service: it broadcasts project
// status updates through an in-memory or Kafka pub/sub and serves them to
// browsers as Server-Sent Events, with a live dashboard, the POST /events
// intake, latest-state queries, health, readiness and Prometheus metrics.
//
// Every flag can also be set with an environment variable STATUSD_<NAME>
// (upper case, '-' as '_'); a flag on the command line wins.
//
//	statusd --demo                      # in memory, with simulated projects
//	STATUSD_ADDR=:9090 statusd          # env instead of flags
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/memory"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.LookupEnv, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "statusd:", err)
		os.Exit(2)
	}
}

// config is everything statusd reads from flags and the environment.
type config struct {
	addr         string
	pubsub       string
	demo         bool
	heartbeat    time.Duration
	history      int
	maxClients   int
	maxProjects  int
	queueSize    int
	writeTimeout time.Duration
	logLevel     slog.Level
	shutdown     time.Duration
	kafka        kafkaFlags
	net          netFlags
	logFormat    string
}

// parseConfig reads flags from args, each defaulting to the environment
// variable STATUSD_<NAME>.
func parseConfig(args []string, lookupEnv func(string) (string, bool), output io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("statusd", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&c.addr, "addr", ":8080", "listen address; port 0 picks a free port")
	fs.StringVar(&c.pubsub, "pubsub", "memory", "pub/sub: memory or kafka")
	fs.BoolVar(&c.demo, "demo", false, "run a built-in ProjectSetup simulator that takes a handful of projects through their states forever")
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "longest silence on a stream before a heartbeat comment")
	fs.IntVar(&c.history, "history", 10_000, "events kept for Last-Event-ID resume")
	fs.IntVar(&c.maxClients, "max-clients", 10_000, "most concurrent SSE streams; the next gets 503")
	fs.IntVar(&c.maxProjects, "max-projects", 100_000, "most projects whose latest event is kept (snapshots, GET /projects)")
	fs.IntVar(&c.queueSize, "client-queue", 8192, "events queued per stream before it coalesces to the latest per project")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "deadline of each write to a stream; a client that misses it is disconnected and resumes")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: DEBUG, INFO, WARN or ERROR")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 4*time.Second, "how long a clean shutdown may take")
	c.kafka.register(fs)
	c.net.register(fs)
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text (key=value) or json (one object per line)")

	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "STATUSD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := lookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return c, envErr
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	switch {
	case c.pubsub != "memory" && c.pubsub != "kafka":
		return c, fmt.Errorf("--pubsub must be memory or kafka, got %q", c.pubsub)
	case c.heartbeat <= 0, c.writeTimeout <= 0, c.shutdown <= 0:
		return c, errors.New("durations must be positive")
	case c.history <= 0, c.maxClients <= 0, c.maxProjects <= 0, c.queueSize <= 0:
		return c, errors.New("sizes must be positive")
	}
	if c.pubsub == "kafka" {
		if _, err := c.kafka.config(); err != nil {
			return c, err
		}
	}
	if err := c.net.validate(); err != nil {
		return c, err
	}
	if _, err := newLogHandler(c.logFormat, io.Discard, c.logLevel); err != nil {
		return c, err
	}
	return c, nil
}

// run starts the service and blocks until ctx ends, then shuts down.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	cfg, err := parseConfig(args, lookupEnv, stderr)
	if err != nil {
		return err
	}
	logHandler, err := newLogHandler(cfg.logFormat, stderr, cfg.logLevel)
	if err != nil {
		return err
	}
	logger := slog.New(logHandler)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(latencyRuntimeMetrics), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var bus *pubsub.Bus
	m := metrics.New(reg, func() float64 {
		if bus == nil {
			return 0
		}
		return float64(bus.OutboxDepth())
	})
	busCfg := pubsub.Config{
		Metrics: m,
		Hub:     fanout.Config{History: cfg.history, MaxProjects: cfg.maxProjects, QueueSize: cfg.queueSize},
	}
	switch cfg.pubsub {
	case "memory":
		bus, err = pubsub.NewInMemory(busCfg, logger)
	case "kafka":
		var kc pubsub.KafkaConfig
		if kc, err = cfg.kafka.config(); err == nil {
			bus, err = pubsub.NewKafka(busCfg, kc, logger)
		}
	}
	if err != nil {
		return err
	}

	api := httpapi.New(httpapi.Config{
		Heartbeat:    cfg.heartbeat,
		WriteTimeout: cfg.writeTimeout,
		MaxClients:   cfg.maxClients,
		QueueSize:    cfg.queueSize,
		Metrics:      m,
		Gatherer:     reg,
		Ready:        bus.Ready,
	}, bus, logger)
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(api.CloseStreams)
	lst, err := cfg.net.configure(srv, logger) // TLS, HTTP/2, h2c: tls.go
	if err == nil {
		defer lst.stop()
	}

	ln, err := listenIf(err, cfg.addr)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
		defer cancel()
		_ = bus.Close(ctx)
		return err
	}
	logger.Info("listening on "+lst.scheme+strings.TrimPrefix(listenURL(ln.Addr()), "http"), "pubsub", cfg.pubsub, "demo", cfg.demo,
		"protocols", srv.Protocols.String())

	serveErr := make(chan error, 1)
	go func() { serveErr <- lst.serve(srv, ln) }()

	demoCtx, stopDemo := context.WithCancel(ctx)
	demoDone := make(chan struct{})
	go func() {
		defer close(demoDone)
		if !cfg.demo {
			return
		}
		repo := memory.NewRepository(nil)
		setup := app.NewProjectSetup(repo, bus, logger)
		if err := app.Demo(demoCtx, app.DemoConfig{}, repo, setup, logger); err != nil && demoCtx.Err() == nil {
			logger.Error("demo stopped", "error", err)
		}
	}()

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err = <-serveErr:
		logger.Error("server failed", "error", err)
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
	defer cancel()
	stopDemo()
	<-demoDone
	var errs []error
	if err := srv.Shutdown(shutdownCtx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	if err := bus.Close(shutdownCtx); err != nil {
		errs = append(errs, fmt.Errorf("pub/sub close: %w", err))
	}
	if len(errs) > 0 {
		logger.Error("unclean shutdown", "error", errors.Join(errs...))
	} else {
		logger.Info("stopped")
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// listenURL renders the address a client can reach the server on: an
// unspecified host (":8080") becomes localhost.
func listenURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
