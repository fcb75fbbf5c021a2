package e2e

import (
	"net/http"
	"testing"
	"time"
)

// tagBound is the staleness bound the README promises between manifest
// replicas: a tag moved or deleted through one replica is served so by
// every other within this long (manifest.DefaultStaleness).
const tagBound = time.Second

// tagMargin is what the test allows on top of tagBound for the requests
// themselves on a loaded machine: a store round trip and a poll interval.
const tagMargin = 500 * time.Millisecond

// TestTagBoundAcrossReplicas runs two manifest replicas behind two gateways,
// gateway A talking only to replica 1 and gateway B only to replica 2. With
// B's caches warm, a tag moved through A must be served moved by B within
// the bound, and a tag deleted through A must be gone from B within it.
func TestTagBoundAcrossReplicas(t *testing.T) {
	s, err := startStack(keelBinary(t), stackEnv{manifestReplicas: 2, gateways: 2})
	if err != nil {
		msg := ""
		if s != nil {
			msg = s.logs()
		}
		t.Fatalf("start a stack with two manifest replicas and two gateways: %v\n%s", err, msg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stack logs:\n%s", s.logs())
		}
		if err := s.stop(); err != nil {
			t.Errorf("stop the stack: %v", err)
		}
	})
	if len(s.gateways) != 2 || len(s.processesOf("manifest")) != 2 {
		t.Fatalf("gateways = %d, manifest processes = %d, want 2 and 2",
			len(s.gateways), len(s.processesOf("manifest")))
	}
	a := registryClient{t: t, base: "http://" + s.gateways[0], creds: &s.admin}
	b := registryClient{t: t, base: "http://" + s.gateways[1], creds: &s.admin}

	const repo, tag = "bound/app", "latest"
	path := "/v2/" + repo + "/manifests/" + tag
	one, two := newImage(t, 1000), newImage(t, 2000)
	pushImage(t, a, repo, tag, one)
	for _, method := range []string{"GET", "HEAD"} { // warm B's caches
		if got := digestVia(b, method, path); got != one.digest {
			t.Fatalf("%s %s via B = %q, want %s", method, path, got, one.digest)
		}
	}

	pushImage(t, a, repo, tag, two)
	moved := time.Now()
	if got := digestVia(a, "GET", path); got != two.digest {
		t.Errorf("GET %s via A right after the move = %q, want %s", path, got, two.digest)
	}
	for _, method := range []string{"GET", "HEAD"} {
		took := waitUntil(t, moved, method+" "+path+" via B serves the moved tag", func() bool {
			return digestVia(b, method, path) == two.digest
		})
		t.Logf("%s via B served the moved tag %s after the move", method, took)
	}

	resp := a.do("DELETE", path, nil, nil)
	deleted := time.Now()
	if resp.status != http.StatusAccepted {
		t.Fatalf("DELETE %s via A = %d %s, want 202", path, resp.status, truncate(resp.body))
	}
	took := waitUntil(t, deleted, "GET "+path+" via B answers 404", func() bool {
		return b.do("GET", path, nil, nil).status == http.StatusNotFound
	})
	t.Logf("GET via B answered 404 %s after the delete", took)
}

// digestVia returns the Docker-Content-Digest of a manifest request, or
// the status when it is not 200.
func digestVia(c registryClient, method, path string) string {
	c.t.Helper()
	resp := c.do(method, path, http.Header{"Accept": {mtManifest}}, nil)
	if resp.status != http.StatusOK {
		return http.StatusText(resp.status)
	}
	return resp.header.Get("Docker-Content-Digest")
}

// waitUntil polls cond every 20 ms and returns how long after since it first
// held; it fails the test if that is not within tagBound plus tagMargin.
func waitUntil(t *testing.T, since time.Time, what string, cond func() bool) time.Duration {
	t.Helper()
	for !cond() {
		if time.Since(since) > tagBound+tagMargin {
			t.Fatalf("%s: not within %s (+%s margin)", what, tagBound, tagMargin)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(since)
	if took > tagBound+tagMargin {
		t.Errorf("%s: after %s, want within %s (+%s margin)", what, took, tagBound, tagMargin)
	}
	return took.Round(time.Millisecond)
}
