package stack

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestPprofIsOptIn checks that a process serves the profiling endpoints on
// PprofAddr when it is set, and that the gateway does not serve them.
func TestPprofIsOptIn(t *testing.T) {
	pprofAddr := freeAddr(t)
	st := startStack(t, Config{PprofAddr: pprofAddr}, slog.New(slog.DiscardHandler))

	status, body := httpGet(t, "http://"+pprofAddr+"/debug/pprof/goroutine?debug=1")
	if status != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("GET pprof goroutine = %d %.80q, want 200 with a goroutine profile",
			status, body)
	}
	if status, _ := httpGet(t, st.base+"/debug/pprof/"); status == http.StatusOK {
		t.Errorf("GET gateway /debug/pprof/ = 200, want the profiles only on PprofAddr")
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("NewRequest(%s): %v", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}
