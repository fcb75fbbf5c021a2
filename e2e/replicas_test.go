package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUploadReplicas runs two upload-service processes behind the gateway's
// round robin. A chunked upload alternates replicas chunk by chunk; then
// the replica serving a PATCH is killed with SIGKILL half-way through, and
// the client resumes from the offset the registry reports.
func TestUploadReplicas(t *testing.T) {
	s := ownStack(t, stackEnv{uploadReplicas: 2})
	admin := registryClient{t: t, base: s.url(""), creds: &s.admin}
	replicas := s.processesOf("upload")
	if len(replicas) != 2 {
		t.Fatalf("upload processes = %d, want 2", len(replicas))
	}
	warmUp(t, admin, replicas)

	t.Run("chunks alternate replicas", func(t *testing.T) {
		blob := randomBytes(t, 17<<20+321)
		loc := openSession(t, admin, "replicas/chunked")
		sizes := []int{3 << 20, 5<<20 + 1, 777, 6 << 20, 1 << 20}
		var off int
		var served []string
		for _, n := range sizes {
			before := writeCalls(replicas)
			resp := admin.do("PATCH", loc, http.Header{
				"Content-Type":  {"application/octet-stream"},
				"Content-Range": {fmt.Sprintf("%d-%d", off, off+n-1)},
			}, blob[off:off+n])
			if resp.status != http.StatusAccepted {
				t.Fatalf("PATCH %d-%d = %d %s", off, off+n-1, resp.status, truncate(resp.body))
			}
			off += n
			if got := resp.header.Get("Range"); got != fmt.Sprintf("0-%d", off-1) {
				t.Errorf("PATCH Range = %q, want 0-%d", got, off-1)
			}
			loc = resp.header.Get("Location")
			served = append(served, servedBy(t, replicas, before))
		}
		for i := 1; i < len(served); i++ {
			if served[i] == served[i-1] {
				t.Errorf("PATCHes were served by %v, want the replicas alternating", served)
				break
			}
		}

		closeSession(t, admin, loc, blob[off:], sha256Digest(blob))
		assertBlob(t, admin, "replicas/chunked", blob)
	})

	t.Run("replica killed mid-PATCH", func(t *testing.T) {
		blob := randomBytes(t, 160<<20)
		loc := openSession(t, admin, "replicas/killed")
		victim := killDuringPatch(t, s, admin, loc, blob, replicas)
		t.Logf("killed %s (pid %d) during the PATCH", victim.name, victim.pid())

		off := committedOffset(t, admin, loc)
		if off%(5<<20) != 0 || off > int64(len(blob)) {
			t.Fatalf("committed offset after the kill = %d, want whole 5 MiB parts", off)
		}
		t.Logf("the registry kept %d of %d bytes; resuming from there", off, len(blob))

		resp := admin.do("PATCH", loc, http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("%d-%d", off, len(blob)-1)},
		}, blob[off:])
		if resp.status != http.StatusAccepted {
			t.Fatalf("resuming PATCH = %d %s", resp.status, truncate(resp.body))
		}
		loc = resp.header.Get("Location")

		stale := admin.do("PATCH", loc, http.Header{
			"Content-Type":  {"application/octet-stream"},
			"Content-Range": {fmt.Sprintf("0-%d", 99)},
		}, blob[:100])
		if stale.status != http.StatusRequestedRangeNotSatisfiable ||
			stale.header.Get("Range") != fmt.Sprintf("0-%d", len(blob)-1) {
			t.Errorf("replayed PATCH = %d, Range %q; want 416 with Range 0-%d",
				stale.status, stale.header.Get("Range"), len(blob)-1)
		}

		closeSession(t, admin, loc, nil, sha256Digest(blob))
		assertBlob(t, admin, "replicas/killed", blob)
	})
}

// ownStack starts a stack for the calling test alone and stops it when the
// test ends, printing its logs if the test failed.
func ownStack(t *testing.T, env stackEnv) *stack {
	t.Helper()
	s, err := startStack(keelBinary(t), env)
	if err != nil {
		msg := ""
		if s != nil {
			msg = s.logs()
		}
		t.Fatalf("start a stack: %v\n%s", err, msg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stack logs:\n%s", s.logs())
		}
		if err := s.stop(); err != nil {
			t.Errorf("stop the stack: %v", err)
		}
	})
	return s
}

// processesOf returns the stack's processes running target.
func (s *stack) processesOf(target string) []*process {
	var out []*process
	for _, p := range s.procs {
		if name, _, _ := strings.Cut(p.name, "#"); name == target {
			out = append(out, p)
		}
	}
	return out
}

// forget drops a process the test killed, so stopping the stack does not
// count it as a failure.
func (s *stack) forget(p *process) {
	for i, q := range s.procs {
		if q == p {
			s.procs = append(s.procs[:i], s.procs[i+1:]...)
			return
		}
	}
}

// writeCalls counts the WriteUpload calls each replica has logged.
func writeCalls(replicas []*process) []int {
	out := make([]int, len(replicas))
	for i, p := range replicas {
		out[i] = strings.Count(p.logs.String(), "UploadService/WriteUpload")
	}
	return out
}

// servedBy names the one replica whose WriteUpload count grew since before.
// A call's log line may reach the pipe just after its answer, so it waits
// a little for the line.
func servedBy(t *testing.T, replicas []*process, before []int) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		after := writeCalls(replicas)
		var who []string
		for i, p := range replicas {
			if after[i] > before[i] {
				who = append(who, p.name)
			}
		}
		if len(who) == 1 {
			return who[0]
		}
		if len(who) > 1 || time.Now().After(deadline) {
			t.Fatalf("WriteUpload served by %v, want exactly one replica", who)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// warmUp sends cheap calls until both replicas have served one, so that
// the gateway's round robin has connections to both.
func warmUp(t *testing.T, c registryClient, replicas []*process) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := 0
		for _, p := range replicas {
			if strings.Contains(p.logs.String(), "UploadService/") {
				seen++
			}
		}
		if seen == len(replicas) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d upload replicas got calls within 30s", seen, len(replicas))
		}
		c.do("GET", "/v2/replicas/warmup/blobs/"+sha256Digest([]byte("none")), nil, nil)
	}
}

func openSession(t *testing.T, c registryClient, repo string) string {
	t.Helper()
	resp := c.do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if resp.status != http.StatusAccepted {
		t.Fatalf("POST upload to %s = %d %s", repo, resp.status, truncate(resp.body))
	}
	return resp.header.Get("Location")
}

func closeSession(t *testing.T, c registryClient, loc string, last []byte, digest string) {
	t.Helper()
	resp := c.do("PUT", withDigest(loc, digest),
		http.Header{"Content-Type": {"application/octet-stream"}}, last)
	if resp.status != http.StatusCreated {
		t.Fatalf("closing PUT = %d %s", resp.status, truncate(resp.body))
	}
}

func assertBlob(t *testing.T, c registryClient, repo string, blob []byte) {
	t.Helper()
	resp := c.do("GET", "/v2/"+repo+"/blobs/"+sha256Digest(blob), nil, nil)
	if resp.status != http.StatusOK || !bytes.Equal(resp.body, blob) {
		t.Fatalf("GET blob = %d with %d bytes, want 200 with the %d bytes pushed",
			resp.status, len(resp.body), len(blob))
	}
}

// committedOffset asks the upload URL how many bytes the registry holds,
// retrying while the gateway still notices the dead replica.
func committedOffset(t *testing.T, c registryClient, loc string) int64 {
	t.Helper()
	for attempt := 0; ; attempt++ {
		resp := c.do("GET", loc, nil, nil)
		if resp.status == http.StatusNoContent {
			_, last, ok := strings.Cut(resp.header.Get("Range"), "-")
			n, err := strconv.ParseInt(last, 10, 64)
			if !ok || err != nil {
				t.Fatalf("GET upload Range = %q", resp.header.Get("Range"))
			}
			if n == 0 {
				// "0-0" is how an empty session is reported (Docker's
				// convention); a one-byte one cannot occur here, where
				// only whole parts survive a kill.
				return 0
			}
			return n + 1
		}
		if resp.status < 500 || attempt == 10 {
			t.Fatalf("GET upload = %d %s, want 204", resp.status, truncate(resp.body))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// killDuringPatch streams blob in one PATCH and, once a quarter of it has
// been sent, kills with SIGKILL the replica that is busy receiving it (the
// one burning CPU on hashing). It returns the killed process.
func killDuringPatch(
	t *testing.T, s *stack, c registryClient, loc string, blob []byte, replicas []*process,
) *process {
	t.Helper()
	quarter := make(chan struct{})
	body := &signalReader{r: bytes.NewReader(blob), at: int64(len(blob) / 4), signal: quarter}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PATCH", c.base+loc, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	req.SetBasicAuth(c.creds.user, c.creds.pass)

	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				err = fmt.Errorf("PATCH succeeded although its replica was killed")
			}
		}
		done <- err
	}()

	<-quarter
	victim := busiest(t, replicas)
	if err := syscall.Kill(victim.pid(), syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s: %v", victim.name, err)
	}
	<-victim.exited
	s.forget(victim)
	if err := <-done; err != nil && strings.Contains(err.Error(), "succeeded") {
		t.Fatal(err)
	}
	return victim
}

// busiest returns the replica that spends the most CPU over a short window.
func busiest(t *testing.T, replicas []*process) *process {
	t.Helper()
	before := make([]int64, len(replicas))
	for i, p := range replicas {
		before[i] = cpuTicks(t, p.pid())
	}
	time.Sleep(300 * time.Millisecond)
	var best *process
	var most int64 = -1
	for i, p := range replicas {
		if d := cpuTicks(t, p.pid()) - before[i]; d > most {
			best, most = p, d
		}
	}
	return best
}

// cpuTicks reads a process's user plus system time, in clock ticks.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read stat of %d: %v", pid, err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// signalReader closes signal once at bytes have been read.
type signalReader struct {
	r      io.Reader
	n, at  int64
	signal chan struct{}
}

func (s *signalReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	before := s.n
	s.n += int64(n)
	if before < s.at && s.n >= s.at {
		close(s.signal)
	}
	return n, err
}

// withDigest adds the digest parameter that closes an upload to its URL.
func withDigest(loc, digest string) string {
	if strings.Contains(loc, "?") {
		return loc + "&digest=" + digest
	}
	return loc + "?digest=" + digest
}
