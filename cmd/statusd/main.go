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
//	statusd token --jwt-secret S --subscribe 'projects:*' --ttl 1h   # mint a token (SECURITY.md)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/fanout"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/httpapi"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/kafka"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/memory"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/metrics"
	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
	"github.com/statusbroadcaster/statusbroadcaster/app"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "token" {
		if err := runToken(os.Args[2:], os.LookupEnv, os.Stdout, os.Stderr); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				os.Exit(0)
			}
			fmt.Fprintln(os.Stderr, "statusd:", err)
			os.Exit(2)
		}
		return
	}
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
	maxListings  int
	minRate      int
	logLevel     slog.Level
	shutdown     time.Duration
	kafka        kafkaFlags
	auth         authFlags
	metricsAddr  string
	pprof        bool
	harden       hardenFlags
	database     databaseFlags
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
	fs.IntVar(&c.history, "history", 10_000, "events kept for Last-Event-ID resume (kafka gateways read as many of the topic's last records at start)")
	fs.IntVar(&c.maxClients, "max-clients", 10_000, "most concurrent SSE streams; the next gets 503")
	fs.IntVar(&c.maxProjects, "max-projects", 100_000, "most projects whose latest event is kept (snapshots, GET /projects)")
	fs.IntVar(&c.queueSize, "client-queue", 8192, "events queued per stream; a stream whose queue fills is parked until its client reads, then catches up with the latest event per project")
	fs.DurationVar(&c.writeTimeout, "write-timeout", 10*time.Second, "deadline of each write to a stream; a client that misses it is disconnected and resumes")
	fs.IntVar(&c.maxListings, "max-listings", 4, "most concurrent GET /projects responses; the next gets 503")
	fs.IntVar(&c.minRate, "backlog-min-rate", 64<<10, "slowest average rate, in bytes/s, at which a client must take a snapshot, replay or GET /projects body (after a first --write-timeout); a slower one is ended and resumes; negative: no minimum")
	fs.TextVar(&c.logLevel, "log-level", slog.LevelInfo, "log level: DEBUG, INFO, WARN or ERROR")
	fs.DurationVar(&c.shutdown, "shutdown-timeout", 4*time.Second, "how long a clean shutdown may take")
	c.kafka.register(fs)
	c.auth.register(fs)
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve GET /metrics on this address instead (e.g. 127.0.0.1:9090), and not on --addr")
	fs.BoolVar(&c.pprof, "pprof", false, "also serve Go's profiles (net/http/pprof, /debug/pprof/) on the --metrics-addr listener; needs --metrics-addr")
	c.harden.register(fs)
	c.database.register(fs)
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
	case c.history <= 0, c.maxClients <= 0, c.maxProjects <= 0, c.queueSize <= 0, c.maxListings <= 0, c.minRate == 0:
		return c, errors.New("sizes must be positive")
	case c.pprof && c.metricsAddr == "":
		return c, errors.New("--pprof needs --metrics-addr: profiles are served on the private listener only")
	}
	if err := c.harden.check(); err != nil {
		return c, err
	}
	if c.pubsub == "kafka" {
		if _, err := c.kafka.config(); err != nil {
			return c, err
		}
	}
	if _, err := c.auth.config(); err != nil {
		return c, err
	}
	if err := c.database.validate(); err != nil {
		return c, err
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
	db, err := openDurable(ctx, cfg.database, logger)
	if err != nil {
		return err
	}
	defer db.close()
	cfg.database.busConfig(cfg.pubsub, &busCfg)
	switch cfg.pubsub {
	case "memory":
		bus, err = pubsub.NewInMemory(busCfg, logger)
	case "kafka":
		var kc kafka.Config
		if kc, err = cfg.kafka.config(); err == nil {
			kc.FillHistory = cfg.history // a gateway resumes ids from before it started
			bus, err = kafka.New(busCfg, kc, logger)
		}
	}
	if err != nil {
		return err
	}
	if err := db.start(bus); err != nil {
		_ = bus.Close(context.Background())
		return err
	}

	verifier, err := cfg.auth.verifier(logger)
	if err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
		defer cancel()
		_ = bus.Close(ctx)
		return err
	}
	apiCfg := httpapi.Config{
		Heartbeat:      cfg.heartbeat,
		WriteTimeout:   cfg.writeTimeout,
		MaxClients:     cfg.maxClients,
		QueueSize:      cfg.queueSize,
		MaxListings:    cfg.maxListings,
		MinRate:        cfg.minRate,
		Metrics:        m,
		Gatherer:       reg,
		Ready:          bus.Ready,
		DisableMetrics: cfg.metricsAddr != "",

		CORSOrigins:     cfg.harden.origins,
		MaxClientsPerIP: cfg.harden.maxClientsPerIP,
		TrustedProxies:  cfg.harden.proxies,
		PublishRate:     cfg.harden.publishRate,
		PublishBurst:    cfg.harden.publishBurst,
		BodyReadTimeout: cfg.harden.readBodyTimeout,
	}
	if verifier != nil {
		defer verifier.Close()
		apiCfg.Auth = verifier
	}
	db.apiConfig(&apiCfg)
	api := httpapi.New(apiCfg, bus, logger)
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: cfg.harden.readHeaderTimeout,
		MaxHeaderBytes:    httpapi.MaxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ConnContext:       api.ConnContext, // streams size their socket send buffers
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
		_ = db.stopForwarding()
		_ = bus.Close(ctx)
		return err
	}
	logger.Info("listening on "+lst.scheme+strings.TrimPrefix(listenURL(ln.Addr()), "http"), "pubsub", cfg.pubsub, "demo", cfg.demo,
		"database", cfg.database.url != "", "protocols", srv.Protocols.String())
	if limit := debug.SetMemoryLimit(-1); limit != math.MaxInt64 {
		logger.Info("memory limit (GOMEMLIMIT)", "bytes", limit)
	}

	serveErr := make(chan error, 2) // the server, and the metrics listener (--metrics-addr)
	go func() { serveErr <- lst.serve(srv, ln) }()
	metricsSrv, err := serveMetrics(cfg.metricsAddr, cfg.pprof, reg, logger, serveErr)
	if err != nil {
		_ = srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdown)
		defer cancel()
		_ = bus.Close(ctx)
		return err
	}

	demoCtx, stopDemo := context.WithCancel(ctx)
	demoDone := make(chan struct{})
	go func() {
		defer close(demoDone)
		if !cfg.demo {
			return
		}
		var repo ports.ProjectRepository = memory.NewRepository(nil)
		setup := app.NewProjectSetup(repo, bus, logger)
		repo, setup = db.demo(repo, setup, bus, logger)
		// A repository error stops the demo; on a database (an outage)
		// it starts again a second later, with the projects it left.
		for {
			err := app.Demo(demoCtx, app.DemoConfig{}, repo, setup, logger)
			if demoCtx.Err() != nil {
				return
			}
			logger.Error("demo stopped", "error", err)
			if db == nil {
				return
			}
			select {
			case <-demoCtx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()

	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case err = <-serveErr:
		logger.Error("server failed", "error", err)
	}

	stopDemo()
	<-demoDone
	shutdown(srv, metricsSrv, db.stopForwarding, bus, cfg.shutdown, logger)
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
