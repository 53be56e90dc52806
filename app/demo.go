package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
	"github.com/statusbroadcaster/statusbroadcaster/ports"
)

// DemoConfig configures Demo. Zero values take the defaults.
type DemoConfig struct {
	// Projects is how many projects the demo sets up, concurrently.
	// Default 6.
	Projects int
	// StepMin and StepMax bound how long a simulated step takes. Defaults
	// 400ms and 1.6s.
	StepMin, StepMax time.Duration
	// Pause is how long a finished project rests before it starts over.
	// Default 3s.
	Pause time.Duration
	// FailureRate is the chance that a setup fails at one of its steps.
	// Default 0.3; a negative rate means no setup ever fails.
	// Default 0.3.
	FailureRate float64
	// Seed makes the run repeatable; 0 picks one at random.
	Seed uint64
}

func (c *DemoConfig) setDefaults() {
	if c.Projects <= 0 {
		c.Projects = 6
	}
	if c.StepMin <= 0 {
		c.StepMin = 400 * time.Millisecond
	}
	if c.StepMax < c.StepMin {
		c.StepMax = max(c.StepMin, 1600*time.Millisecond)
	}
	if c.Pause <= 0 {
		c.Pause = 3 * time.Second
	}
	if c.FailureRate == 0 {
		c.FailureRate = 0.3
	}
	if c.Seed == 0 {
		c.Seed = rand.Uint64()
	}
}

// demoProjects are the names the demo gives its projects.
var demoProjects = []string{"phoenix_shop", "ledger_api", "chat_live", "docs_site", "billing_jobs", "auth_gateway", "search_indexer", "mailer", "metrics_exporter", "ingest_worker"}

// demoFailures are what the setup steps of the original system fail with.
var demoFailures = map[domain.Status]string{
	domain.StatusCloning:        "git clone failed: repository not found",
	domain.StatusFetchingDeps:   "Mix deps.get failed",
	domain.StatusCompiling:      "mix compile failed: undefined function foo/0 (lib/app.ex:42)",
	domain.StatusGeneratingDocs: "mix docs failed: ExDoc could not find README.md",
}

// DemoSteps are the setup steps of a project, in order.
var DemoSteps = []domain.Status{domain.StatusCloning, domain.StatusFetchingDeps, domain.StatusCompiling, domain.StatusGeneratingDocs}

// Demo creates cfg.Projects projects in repo and takes each through its
// setup with setup, over and over, until ctx ends; some setups fail with an
// error message. It returns ctx's error, or the first repository error,
// which stops every project. It returns only once all its goroutines have.
func Demo(ctx context.Context, cfg DemoConfig, repo ports.ProjectRepository, setup *ProjectSetup, logger *slog.Logger) error {
	cfg.setDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	parent := ctx
	ctx, stop := context.WithCancel(parent)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Projects)
	for i := range cfg.Projects {
		name := demoProjects[i%len(demoProjects)]
		if i >= len(demoProjects) {
			name = fmt.Sprintf("%s_%d", name, i/len(demoProjects)+1)
		}
		p, err := repo.Create(ctx, domain.Project{
			ID:       fmt.Sprintf("demo-%d", i+1),
			Name:     name,
			CodeRepo: "https://github.com/example/" + name,
			DocsRepo: "https://github.com/example/" + name + "_docs",
		})
		if errors.Is(err, ports.ErrProjectExists) {
			// A database kept from an earlier run: carry on with it.
			p, err = repo.Get(ctx, fmt.Sprintf("demo-%d", i+1))
		}
		if err != nil {
			stop()
			wg.Wait()
			return err
		}
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
		wg.Go(func() {
			errs <- demoLoop(ctx, cfg, rng, p.ID, setup, logger)
			// A loop ends when ctx does or on a repository error, which
			// stops the other projects too.
			stop()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	return parent.Err()
}

func demoLoop(ctx context.Context, cfg DemoConfig, rng *rand.Rand, id string, setup *ProjectSetup, logger *slog.Logger) error {
	for {
		// Stagger the projects so the dashboard never moves in lock-step.
		if err := sleep(ctx, randomDuration(rng, 0, cfg.Pause)); err != nil {
			return err
		}
		failAt := -1
		if rng.Float64() < cfg.FailureRate {
			failAt = rng.IntN(len(DemoSteps))
		}
		steps := make([]Step, len(DemoSteps))
		for i, status := range DemoSteps {
			steps[i] = Step{Status: status, Run: func(ctx context.Context, _ domain.Project) error {
				if err := sleep(ctx, randomDuration(rng, cfg.StepMin, cfg.StepMax)); err != nil {
					return err
				}
				if i == failAt {
					return errors.New(demoFailures[status])
				}
				return nil
			}}
		}
		err := setup.Run(ctx, id, steps)
		var stepErr *StepError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &stepErr):
			logger.Info("demo setup failed", "project_id", id, "step", stepErr.Status, "error", stepErr.Err)
		case err != nil:
			return err
		}
		if err := sleep(ctx, cfg.Pause); err != nil {
			return err
		}
		if _, err := setup.transition(ctx, id, domain.StatusPending); err != nil {
			return err
		}
	}
}

func randomDuration(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
