package bench

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
)

// Report writes results as Markdown: one table comparing the figures of
// every scenario across targets, then one of memory and CPU per process.
func Report(w io.Writer, results []Result, targets []Target) {
	names := make([]string, len(targets))
	for i, t := range targets {
		names[i] = t.Name
	}

	fmt.Fprintf(w, "| scenario | figure | %s | ratio %s/%s | goal |\n",
		strings.Join(names, " | "), names[0], names[len(names)-1])
	fmt.Fprintf(w, "|---|---|%s---|---|\n", strings.Repeat("---|", len(names)))
	for _, r := range results {
		for _, row := range r.Scenario.Rows {
			vals := make([]float64, len(names))
			cells := make([]string, len(names))
			for i, n := range names {
				vals[i] = median(figures(r.Runs[n], row))
				cells[i] = format(vals[i])
			}
			ratio := "-"
			if last := vals[len(vals)-1]; last > 0 {
				ratio = fmt.Sprintf("%.2f", vals[0]/last)
			}
			fmt.Fprintf(w, "| %s: %s | %s | %s | %s | %s |\n", r.Scenario.Key,
				r.Scenario.Title, row.Label, strings.Join(cells, " | "), ratio, row.Goal)
		}
	}

	fmt.Fprintf(w, "\nPeak resident memory (MiB) and CPU seconds of each process, "+
		"per scenario (CPU summed over the scenario's runs):\n\n")
	fmt.Fprintf(w, "| scenario | registry | process | peak RSS MiB | CPU s |\n|---|---|---|---|---|\n")
	for _, r := range results {
		for _, n := range names {
			peak, cpu := map[string]int64{}, map[string]float64{}
			for _, run := range r.Runs[n] {
				for _, p := range run {
					for proc, u := range p.Usage {
						peak[proc] = max(peak[proc], u.PeakRSS)
						cpu[proc] += u.CPU.Seconds()
					}
				}
			}
			procs := make([]string, 0, len(peak))
			for p := range peak {
				procs = append(procs, p)
			}
			sort.Strings(procs)
			for _, p := range procs {
				fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.1f |\n", r.Scenario.Key, n, p,
					float64(peak[p])/float64(mib), cpu[p])
			}
		}
	}
}

// figures collects one row's figure from every run.
func figures(runs [][]Phase, row Row) []float64 {
	var out []float64
	for _, run := range runs {
		for _, p := range run {
			if p.Name != row.Phase {
				continue
			}
			if row.Value == "" {
				out = append(out, p.Took.Seconds())
			} else if v, ok := p.Values[row.Value]; ok {
				out = append(out, v)
			}
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

func format(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
