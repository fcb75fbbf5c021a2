package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	for _, host := range []string{"127.0.0.1:5000", "[::1]:5000", "127.0.0.2:1"} {
		if err := (Target{Name: "x", Host: host}).CheckLoopback(); err != nil {
			t.Errorf("CheckLoopback(%s) = %v, want nil", host, err)
		}
	}
	for _, host := range []string{"10.0.0.1:5000", "example.com:80", "0.0.0.0:5000", "nohost"} {
		if err := (Target{Name: "x", Host: host}).CheckLoopback(); err == nil {
			t.Errorf("CheckLoopback(%s) = nil, want an error", host)
		}
	}
}

func TestWatchSeesThisProcess(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stop := Watch(ctx, []Proc{{Name: "self", PID: os.Getpid()}}, time.Millisecond)
	buf := make([]byte, 64<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		buf[0]++
	}
	u := stop()["self"]
	if u.PeakRSS < 64<<20 {
		t.Errorf("PeakRSS = %d, want at least the 64 MiB just touched", u.PeakRSS)
	}
	if u.CPU <= 0 {
		t.Errorf("CPU = %s, want the busy loop's time", u.CPU)
	}
}

func TestReport(t *testing.T) {
	row := Row{Phase: "push", Label: "push time (s)", Goal: "<= 0.66"}
	res := []Result{{
		Scenario: Scenario{Key: "a", Title: "big", Rows: []Row{row}},
		Runs: map[string][][]Phase{
			"keel": {{{Name: "push", Took: 2 * time.Second,
				Usage: map[string]Usage{"upload": {PeakRSS: 80 << 20, CPU: time.Second}}}}},
			"distribution": {{{Name: "push", Took: 4 * time.Second}}},
		},
	}}
	var buf bytes.Buffer
	Report(&buf, res, []Target{{Name: "keel"}, {Name: "distribution"}})
	out := buf.String()
	for _, want := range []string{"| a: big | push time (s) | 2.00 | 4.00 | 0.50 | <= 0.66 |",
		"| a | keel | upload | 80 | 1.0 |"} {
		if !strings.Contains(out, want) {
			t.Errorf("Report output lacks %q:\n%s", want, out)
		}
	}
}
