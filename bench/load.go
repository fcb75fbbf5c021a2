package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// LoadResult is a fixed-duration request loop.
type LoadResult struct {
	// Requests is how many requests succeeded.
	Requests int
	// Errors is how many failed or got an unexpected status.
	Errors int
	// Rate is successful requests per second.
	Rate float64
	// P50 and P99 are latency percentiles of successful requests.
	P50, P99 time.Duration
}

// ManifestLoad sends method requests for repo:tag's manifest from conns
// concurrent connections for d, with basic auth on every request.
func ManifestLoad(
	ctx context.Context, t Target, method, repo, tag string, conns int, d time.Duration,
) (LoadResult, error) {
	c := newClient(conns)
	defer c.CloseIdleConnections()
	url := t.URL(fmt.Sprintf("/v2/%s/manifests/%s", repo, tag))
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()

	var mu sync.Mutex
	var all []time.Duration
	var errs int
	var wg sync.WaitGroup
	begin := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat, bad := loop(ctx, c, t, method, url)
			mu.Lock()
			all = append(all, lat...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)

	res := LoadResult{Requests: len(all), Errors: errs}
	if len(all) == 0 {
		return res, fmt.Errorf("%s %s on %s: no request succeeded (%d errors)",
			method, url, t.Name, errs)
	}
	slices.Sort(all)
	res.Rate = float64(len(all)) / elapsed.Seconds()
	res.P50 = all[len(all)/2]
	res.P99 = all[len(all)*99/100]
	return res, nil
}

// loop sends requests until ctx ends, returning the latency of each success
// and the count of failures.
func loop(ctx context.Context, c *http.Client, t Target, method, url string) ([]time.Duration, int) {
	var lat []time.Duration
	bad := 0
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return lat, bad + 1
		}
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
		req.SetBasicAuth(t.Username, t.Password)
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				bad++
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			bad++
			continue
		}
		lat = append(lat, time.Since(start))
	}
	return lat, bad
}
