package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Phase is one measured step of a scenario on one target.
type Phase struct {
	// Name is the step ("push", "pull", "get", ...).
	Name string
	// Took is its wall time.
	Took time.Duration
	// Usage is what each watched process used during it.
	Usage map[string]Usage
	// Values are figures the step computed (requests/s, percentiles).
	Values map[string]float64
}

// Env is what a scenario gets for one run on one target.
type Env struct {
	// Target is the registry under test.
	Target Target
	// Transport is shared by every client of the run.
	Transport http.RoundTripper
	// Client is an HTTP client over Transport.
	Client *http.Client
	// Seed makes this run's content unique.
	Seed uint64
	// Repo is a repository name unique to this run.
	Repo string
	// Log receives progress lines.
	Log io.Writer

	phases []Phase
}

// Measure runs f as the step called name, timing it and watching the
// target's processes.
func (e *Env) Measure(ctx context.Context, name string, f func() (map[string]float64, error)) error {
	fmt.Fprintf(e.Log, "  %s %s ...\n", e.Target.Name, name)
	stop := Watch(ctx, e.Target.Procs, 20*time.Millisecond)
	begin := time.Now()
	values, err := f()
	took := time.Since(begin)
	usage := stop()
	if err != nil {
		return fmt.Errorf("%s on %s: %w", name, e.Target.Name, err)
	}
	e.phases = append(e.phases, Phase{Name: name, Took: took, Usage: usage, Values: values})
	fmt.Fprintf(e.Log, "  %s %s took %s\n", e.Target.Name, name, took.Round(time.Millisecond))
	return nil
}

// Scenario is one workload.
type Scenario struct {
	// Key is the scenario's short name ("a", "b", ...).
	Key string
	// Title describes it in the report.
	Title string
	// Reps is how many times it runs on each target.
	Reps int
	// Run performs the workload once on env.Target, measuring its steps.
	Run func(ctx context.Context, env *Env) error
	// Rows say which figures the report compares and what is wanted.
	Rows []Row
}

// Row is one line of the report: a figure of one phase.
type Row struct {
	// Phase names the step.
	Phase string
	// Value names a figure in Phase.Values; "" means the wall time.
	Value string
	// Label is shown in the report.
	Label string
	// HigherIsBetter says which way the ratio should go.
	HigherIsBetter bool
	// Goal is the wanted ratio, shown beside the measured one ("<= 0.66").
	Goal string
}

// Result is every phase of every run of one scenario on each target.
type Result struct {
	// Scenario is the workload.
	Scenario Scenario
	// Runs maps a target's name to its runs, each a list of phases.
	Runs map[string][][]Phase
}

// Run executes each scenario Reps times on every target, alternating which
// target goes first so that neither always runs on a warmer machine.
func Run(ctx context.Context, targets []Target, scenarios []Scenario, log io.Writer) ([]Result, error) {
	for _, t := range targets {
		if err := t.CheckLoopback(); err != nil {
			return nil, err
		}
	}
	client := newClient(64)
	defer client.CloseIdleConnections()

	var results []Result
	seed := uint64(time.Now().UnixNano())
	for _, sc := range scenarios {
		res := Result{Scenario: sc, Runs: map[string][][]Phase{}}
		for rep := range sc.Reps {
			for i := range targets {
				t := targets[(i+rep)%len(targets)]
				seed++
				fmt.Fprintf(log, "scenario %s, run %d/%d on %s\n", sc.Key, rep+1, sc.Reps, t.Name)
				env := &Env{Target: t, Transport: client.Transport, Client: client, Seed: seed,
					Repo: fmt.Sprintf("bench/%s-%d-%d", sc.Key, rep, seed%100000), Log: log}
				if err := sc.Run(ctx, env); err != nil {
					return results, fmt.Errorf("scenario %s: %w", sc.Key, err)
				}
				res.Runs[t.Name] = append(res.Runs[t.Name], env.phases)
			}
		}
		results = append(results, res)
	}
	return results, nil
}
