package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what one process used during a measurement.
type Usage struct {
	// PeakRSS is the largest resident set seen, in bytes.
	PeakRSS int64
	// CPU is user plus system time spent during the measurement.
	CPU time.Duration
}

// clockTick is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
const clockTick = 100

// Watch samples the resident memory of procs every interval until the
// returned stop function is called, which returns each process's peak RSS
// and the CPU time it spent between Watch and stop.
func Watch(ctx context.Context, procs []Proc, interval time.Duration) (stop func() map[string]Usage) {
	ctx, cancel := context.WithCancel(ctx)
	startCPU := map[string]time.Duration{}
	peak := map[string]int64{}
	for _, p := range procs {
		startCPU[p.Name], _ = cpuTime(p.PID)
		peak[p.Name], _ = rss(p.PID)
	}

	// Only the sampling goroutine writes peak until stop has seen it end.
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, p := range procs {
				if r, err := rss(p.PID); err == nil && r > peak[p.Name] {
					peak[p.Name] = r
				}
			}
		}
	}()

	return func() map[string]Usage {
		cancel()
		<-done
		out := map[string]Usage{}
		for _, p := range procs {
			cpu, _ := cpuTime(p.PID)
			r, _ := rss(p.PID)
			out[p.Name] = Usage{PeakRSS: max(peak[p.Name], r), CPU: cpu - startCPU[p.Name]}
		}
		return out
	}
}

// rss reads a process's resident set size from /proc/<pid>/status.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(
				strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// cpuTime reads a process's user plus system time from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields resume after its ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short stat for pid %d", pid)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad stat for pid %d", pid)
	}
	return time.Duration(utime+stime) * time.Second / clockTick, nil
}
