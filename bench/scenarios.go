package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// Options sizes the scenarios.
type Options struct {
	// Reps is how many runs of each image scenario per target.
	Reps int
	// LoadDuration is how long each manifest request loop runs.
	LoadDuration time.Duration
	// LoadConns is the request loop's concurrency.
	LoadConns int
	// StreamSizes are the blob sizes of the streamed-push scenario.
	StreamSizes []int64
	// CloseSizes are the blob sizes whose closing PUT is timed.
	CloseSizes []int64
}

// Scenarios returns the workloads, in the order they run:
//
//	a  push and pull one image with a single 512 MiB random layer
//	b  push and pull one image with 200 layers of 4 KiB to 1 MiB
//	c  50 distinct small images pushed at once
//	d  manifest GET and HEAD by tag at LoadConns connections
//	s  one blob pushed in one streamed PATCH, as docker push sends it
//	t  the time to close an upload, for a small and a large blob
func Scenarios(o Options) []Scenario {
	return []Scenario{
		{Key: "a", Title: "one image, one 512 MiB layer", Reps: o.Reps, Run: bigImage,
			Rows: []Row{
				{Phase: "push", Label: "push time (s)", Goal: "<= 0.66"},
				{Phase: "pull", Label: "pull time (s)", Goal: "<= 1.0"},
				{Phase: "push", Value: "cpu_s_per_gb", Label: "CPU s per GB pushed", Goal: "<= 1.0"},
			}},
		{Key: "b", Title: "one image, 200 layers of 4 KiB to 1 MiB", Reps: o.Reps, Run: manyLayers,
			Rows: []Row{
				{Phase: "push", Label: "push time (s)", Goal: "<= 0.5"},
				{Phase: "pull", Label: "pull time (s)"},
			}},
		{Key: "c", Title: "50 small images pushed at once", Reps: o.Reps, Run: manyImages,
			Rows: []Row{
				{Phase: "push", Value: "images_per_s", Label: "images/s",
					HigherIsBetter: true, Goal: ">= 2"},
			}},
		{Key: "d", Title: fmt.Sprintf("manifest by tag, %d connections, %s, auth on",
			o.LoadConns, o.LoadDuration), Reps: 1, Run: manifestLoad(o),
			Rows: []Row{
				{Phase: "get", Value: "rps", Label: "GET requests/s", HigherIsBetter: true, Goal: ">= 5"},
				{Phase: "get", Value: "p50_ms", Label: "GET p50 (ms)"},
				{Phase: "get", Value: "p99_ms", Label: "GET p99 (ms)", Goal: "<= 10 ms"},
				{Phase: "head", Value: "rps", Label: "HEAD requests/s", HigherIsBetter: true, Goal: ">= 5"},
				{Phase: "head", Value: "p50_ms", Label: "HEAD p50 (ms)"},
				{Phase: "head", Value: "p99_ms", Label: "HEAD p99 (ms)", Goal: "<= 10 ms"},
			}},
		streamScenario(o),
		closeScenario(o),
	}
}

// cpuPerGB adds the CPU seconds per GB that the last phase cost, over every
// watched process but the S3 server.
func (e *Env) cpuPerGB(bytes int64) {
	p := &e.phases[len(e.phases)-1]
	var cpu time.Duration
	for name, u := range p.Usage {
		if name != "s3" {
			cpu += u.CPU
		}
	}
	if p.Values == nil {
		p.Values = map[string]float64{}
	}
	p.Values["cpu_s_per_gb"] = cpu.Seconds() / (float64(bytes) / 1e9)
}

func pushAndPull(ctx context.Context, env *Env, sizes []int64) error {
	layers, err := randomLayers(env.Seed, sizes)
	if err != nil {
		return err
	}
	img, err := imageOf(layers)
	if err != nil {
		return err
	}
	var total int64
	for _, n := range sizes {
		total += n
	}

	err = env.Measure(ctx, "push", func() (map[string]float64, error) {
		return nil, PushImage(ctx, env.Transport, env.Target, env.Repo, "v1", img)
	})
	if err != nil {
		return err
	}
	env.cpuPerGB(total)

	return env.Measure(ctx, "pull", func() (map[string]float64, error) {
		n, err := PullImage(ctx, env.Transport, env.Target, env.Repo, "v1")
		if err == nil && n != total {
			err = fmt.Errorf("pulled %d layer bytes, want %d", n, total)
		}
		return nil, err
	})
}

func bigImage(ctx context.Context, env *Env) error {
	return pushAndPull(ctx, env, []int64{512 * mib})
}

func manyLayers(ctx context.Context, env *Env) error {
	return pushAndPull(ctx, env, spreadSizes(env.Seed, 200, 4*kib, mib))
}

func manyImages(ctx context.Context, env *Env) error {
	const n = 50
	imgs := make([]v1.Image, n)
	for i := range imgs {
		layers, err := randomLayers(env.Seed*100+uint64(i), spreadSizes(env.Seed+uint64(i), 1, 16*kib, 256*kib))
		if err != nil {
			return err
		}
		img, err := imageOf(layers)
		if err != nil {
			return err
		}
		imgs[i] = img
	}
	return env.Measure(ctx, "push", func() (map[string]float64, error) {
		begin := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = PushImage(ctx, env.Transport, env.Target,
					fmt.Sprintf("%s-%d", env.Repo, i), "v1", imgs[i])
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		return map[string]float64{"images_per_s": n / time.Since(begin).Seconds()}, nil
	})
}

func manifestLoad(o Options) func(ctx context.Context, env *Env) error {
	return func(ctx context.Context, env *Env) error {
		layers, err := randomLayers(env.Seed, []int64{4 * kib})
		if err != nil {
			return err
		}
		img, err := imageOf(layers)
		if err != nil {
			return err
		}
		if err := PushImage(ctx, env.Transport, env.Target, env.Repo, "latest", img); err != nil {
			return err
		}
		for _, method := range []string{"GET", "HEAD"} {
			err := env.Measure(ctx, strings.ToLower(method), func() (map[string]float64, error) {
				r, err := ManifestLoad(ctx, env.Target, method, env.Repo, "latest", o.LoadConns, o.LoadDuration)
				if err != nil {
					return nil, err
				}
				if r.Errors > 0 {
					return nil, fmt.Errorf("%d of %d requests failed", r.Errors, r.Errors+r.Requests)
				}
				return map[string]float64{"rps": r.Rate,
					"p50_ms": float64(r.P50) / 1e6, "p99_ms": float64(r.P99) / 1e6}, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
}

// sizeName prints a size in MiB or GiB.
func sizeName(n int64) string {
	if n%gib == 0 {
		return fmt.Sprintf("%dGiB", n/gib)
	}
	return fmt.Sprintf("%dMiB", n/mib)
}

func streamScenario(o Options) Scenario {
	sc := Scenario{Key: "s", Title: "one blob in one streamed PATCH (docker push)", Reps: 1}
	for _, n := range o.StreamSizes {
		name := "stream-" + sizeName(n)
		sc.Rows = append(sc.Rows,
			Row{Phase: name, Value: "mb_per_s", Label: sizeName(n) + " push MB/s",
				HigherIsBetter: true, Goal: ">= 1.0"},
			Row{Phase: name, Value: "rss_upload_mib", Label: sizeName(n) + " upload peak RSS (MiB)"},
			Row{Phase: name, Value: "rss_gateway_mib", Label: sizeName(n) + " gateway peak RSS (MiB)"})
	}
	sc.Run = func(ctx context.Context, env *Env) error {
		for _, n := range o.StreamSizes {
			err := env.Measure(ctx, "stream-"+sizeName(n), func() (map[string]float64, error) {
				r, err := StreamPush(ctx, env.Client, env.Target, env.Repo, n, env.Seed)
				if err != nil {
					return nil, err
				}
				return map[string]float64{"mb_per_s": float64(n) / 1e6 / r.Push.Seconds()}, nil
			})
			if err != nil {
				return err
			}
			p := &env.phases[len(env.phases)-1]
			p.Values["rss_upload_mib"] = float64(p.Usage["upload"].PeakRSS) / float64(mib)
			p.Values["rss_gateway_mib"] = float64(p.Usage["gateway"].PeakRSS) / float64(mib)
		}
		return nil
	}
	return sc
}

func closeScenario(o Options) Scenario {
	sc := Scenario{Key: "t", Title: "time to close an upload (closing PUT only)", Reps: o.Reps}
	for _, n := range o.CloseSizes {
		sc.Rows = append(sc.Rows, Row{Phase: "close-" + sizeName(n), Value: "close_ms",
			Label: sizeName(n) + " close (ms)"})
	}
	sc.Run = func(ctx context.Context, env *Env) error {
		for _, n := range o.CloseSizes {
			err := env.Measure(ctx, "close-"+sizeName(n), func() (map[string]float64, error) {
				r, err := StreamPush(ctx, env.Client, env.Target, env.Repo, n, env.Seed)
				if err != nil {
					return nil, err
				}
				return map[string]float64{"close_ms": float64(r.Close) / 1e6}, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	}
	return sc
}
