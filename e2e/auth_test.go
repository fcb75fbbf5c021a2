package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The JWT login settings of the token stacks.
const (
	loginIssuer   = "keel-e2e-ops"
	loginAudience = "keel-e2e"
)

// tokenPolicy is the policy of the token stacks: the JWT subject ci may
// pull and push under jwt/, anyone may pull under public/.
const tokenPolicy = `
rules:
  - subjects: [ci]
    repositories: ["jwt/**"]
    actions: [pull, push]
  - subjects: [anonymous]
    repositories: ["public/**"]
    actions: [pull]
`

// tokenStack is a multi-process stack with Docker's token flow on (Bearer
// challenges), JWT logins and a policy file.
type tokenStack struct {
	*stack
	bin string
	// loginKey is the file holding the operator's private key, from
	// "keel token keygen".
	loginKey string
}

// startTokenStack starts a token stack for one test, stopped when it ends.
// extraAuth is added to the auth process's environment.
func startTokenStack(tb testing.TB, extraAuth ...string) *tokenStack {
	tb.Helper()
	bin, err := buildKeel()
	if err != nil {
		tb.Fatalf("build keel: %v", err)
	}
	dir := tb.TempDir()
	ts := &tokenStack{bin: bin, loginKey: filepath.Join(dir, "login.key")}

	out := ts.keel(tb, "token", "keygen", "-alg", "ES256", "-out", ts.loginKey)
	public := ""
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "public-key: "); ok {
			public = v
		}
	}
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(tokenPolicy), 0o600); err != nil {
		tb.Fatal(err)
	}

	s, err := startStack(bin, stackEnv{
		auth: append([]string{
			"KEEL_AUTH_POLICY=" + policy,
			"KEEL_JWT_PUBLIC_KEY=" + public,
			"KEEL_JWT_ALGORITHM=ES256",
			"KEEL_JWT_ISSUER=" + loginIssuer,
			"KEEL_JWT_AUDIENCE=" + loginAudience,
		}, extraAuth...),
		gateway: []string{"KEEL_TOKEN_AUTH=true"},
	})
	if err != nil {
		msg := ""
		if s != nil {
			msg = s.logs()
		}
		tb.Fatalf("start the token stack: %v\n%s", err, msg)
	}
	ts.stack = s
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("token stack logs (last lines of each process):\n%s", s.logs())
		}
		if err := s.stop(); err != nil {
			tb.Errorf("stop the token stack: %v\n%s", err, s.logs())
		}
	})
	return ts
}

// keel runs the keel binary with args and returns its standard output.
func (ts *tokenStack) keel(tb testing.TB, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, ts.bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("keel %s: %v\n%s", args[0], err, stderr.String())
	}
	return stdout.String()
}

// loginToken issues a JWT login for subject with "keel token issue".
func (ts *tokenStack) loginToken(tb testing.TB, subject, caps string) string {
	tb.Helper()
	return strings.TrimSpace(ts.keel(tb, "token", "issue", "-key", "@"+ts.loginKey,
		"-sub", subject, "-iss", loginIssuer, "-aud", loginAudience, "-ttl", "10m",
		"-cap", caps))
}

// tokenRequests counts the token endpoint's requests in the gateway's log.
func (ts *tokenStack) tokenRequests() int {
	for _, p := range ts.procs {
		if p.name == "gateway" {
			return strings.Count(p.logs.String(), "route=/token status=200")
		}
	}
	return 0
}

// assertUsedTokens fails t unless the token endpoint issued tokens since
// before: the client followed the Bearer challenge.
func (ts *tokenStack) assertUsedTokens(t *testing.T, client string, before int) {
	t.Helper()
	if ts.tokenRequests() <= before {
		t.Errorf("%s fetched no token from /token; want it to follow the Bearer challenge",
			client)
	}
}

// try runs one command of a client tool and returns its output and error,
// for commands that are meant to fail.
func (tl tool) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tl.path, args...)
	cmd.Env, cmd.Dir = tl.env, tl.dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestTokenFlowDocker(t *testing.T) {
	docker := pathTool(t, "docker", "install Docker; the engine must treat 127.0.0.0/8 "+
		"registries as insecure, as it does by default")
	ts := startTokenStack(t)
	dir := t.TempDir()
	d := tool{t: t, path: docker, env: toolEnv(t), dir: dir, secret: ts.admin.pass}
	ref := ts.registry + "/tokenflow/docker:v1"
	t.Cleanup(func() { d.try("rmi", "-f", ref) })

	rootfs := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(rootfs, randomTar(t, "hello.bin", 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	before := ts.tokenRequests()

	d.run("login", ts.registry, "-u", ts.admin.user, "-p", ts.admin.pass)
	d.run("import", rootfs, ref)
	d.run("push", ref)
	id := strings.TrimSpace(d.run("image", "inspect", "--format", "{{.Id}}", ref))
	d.run("rmi", ref)
	d.run("pull", ref)

	if got := strings.TrimSpace(d.run("image", "inspect", "--format", "{{.Id}}", ref)); got != id {
		t.Errorf("pulled image id = %s, want the pushed %s", got, id)
	}
	ts.assertUsedTokens(t, "docker", before)
	// The login went to the test's own DOCKER_CONFIG, not the machine's.
	for _, kv := range d.env {
		if cfgDir, ok := strings.CutPrefix(kv, "DOCKER_CONFIG="); ok {
			raw, err := os.ReadFile(filepath.Join(cfgDir, "config.json"))
			if err != nil || !strings.Contains(string(raw), ts.registry) {
				t.Errorf("%s/config.json = %q, %v; want the login to %s", cfgDir, raw, err,
					ts.registry)
			}
		}
	}
}

func TestTokenFlowCrane(t *testing.T) {
	ts := startTokenStack(t)
	crane := tool{t: t, path: pinnedTool(t, "crane"), env: toolEnv(t), dir: t.TempDir(),
		secret: ts.admin.pass}
	ref := ts.registry + "/tokenflow/crane:v1"
	layer := filepath.Join(crane.dir, "layer.tar")
	if err := os.WriteFile(layer, randomTar(t, "crane.bin", 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	before := ts.tokenRequests()

	crane.run("auth", "login", ts.registry, "-u", ts.admin.user, "-p", ts.admin.pass)
	crane.run("append", "--insecure", "--oci-empty-base", "-t", ref, "-f", layer)
	digest := strings.TrimSpace(crane.run("digest", "--insecure", ref))
	out := filepath.Join(t.TempDir(), "pulled")
	crane.run("pull", "--insecure", "--format", "oci", ref, out)

	if pulled := readLayout(t, out, ""); pulled.digest != digest {
		t.Errorf("pulled manifest digest = %s, want %s", pulled.digest, digest)
	}
	ts.assertUsedTokens(t, "crane", before)
}

func TestTokenFlowSkopeo(t *testing.T) {
	ts := startTokenStack(t)
	skopeo := tool{t: t, path: pathTool(t, "skopeo", "apt-get install skopeo"),
		env: toolEnv(t), dir: t.TempDir(), secret: ts.admin.pass}
	img := newImage(t, 64<<10, 1)
	src := filepath.Join(t.TempDir(), "src")
	img.writeLayout(t, src, "v1")
	ref := "docker://" + ts.registry + "/tokenflow/skopeo:v1"
	creds := ts.admin.user + ":" + ts.admin.pass
	before := ts.tokenRequests()

	skopeo.run("--insecure-policy", "copy", "--dest-creds", creds, "--dest-tls-verify=false",
		"oci:"+src+":v1", ref)
	dst := filepath.Join(t.TempDir(), "dst")
	skopeo.run("--insecure-policy", "copy", "--src-creds", creds, "--src-tls-verify=false",
		ref, "oci:"+dst+":v1")

	assertSameImage(t, img, readLayout(t, dst, "v1"))
	ts.assertUsedTokens(t, "skopeo", before)
}

func TestTokenFlowRegctl(t *testing.T) {
	ts := startTokenStack(t)
	regctl := tool{t: t, path: pinnedTool(t, "regctl"), env: toolEnv(t), dir: t.TempDir(),
		secret: ts.admin.pass}
	img := newImage(t, 64<<10, 1)
	src := filepath.Join(t.TempDir(), "src")
	img.writeLayout(t, src, "v1")
	ref := ts.registry + "/tokenflow/regctl:v1"
	before := ts.tokenRequests()

	regctl.run("registry", "set", "--skip-check", ts.registry, "--tls", "disabled")
	regctl.run("registry", "login", ts.registry, "-u", ts.admin.user, "-p", ts.admin.pass)
	regctl.run("image", "copy", "ocidir://"+src+":v1", ref)
	dst := filepath.Join(t.TempDir(), "dst")
	regctl.run("image", "copy", ref, "ocidir://"+dst+":v1")

	assertSameImage(t, img, readLayout(t, dst, "v1"))
	ts.assertUsedTokens(t, "regctl", before)
}

// TestTokenFlowJWTLogin logs crane in with login tokens from "keel token
// issue": the policy and the token's capabilities both limit what it may
// do.
func TestTokenFlowJWTLogin(t *testing.T) {
	ts := startTokenStack(t)
	pushPull := ts.loginToken(t, "ci", "pull,push")
	pullOnly := ts.loginToken(t, "ci", "pull")
	crane := tool{t: t, path: pinnedTool(t, "crane"), env: toolEnv(t), dir: t.TempDir(),
		secret: pushPull}
	layer := filepath.Join(crane.dir, "layer.tar")
	if err := os.WriteFile(layer, randomTar(t, "jwt.bin", 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	push := func(repo string) (string, error) {
		return crane.try("append", "--insecure", "--oci-empty-base", "-t",
			ts.registry+"/"+repo+":v1", "-f", layer)
	}

	crane.run("auth", "login", ts.registry, "-u", "ci", "-p", pushPull)
	if out, err := push("jwt/app"); err != nil {
		t.Fatalf("crane append to jwt/app with a push token: %v\n%s", err, out)
	}
	if out, err := push("team/app"); err == nil {
		t.Errorf("crane append to team/app (outside the policy) succeeded: %s", out)
	}
	crane.run("auth", "login", ts.registry, "-u", "ci", "-p", pullOnly)
	crane.run("digest", "--insecure", ts.registry+"/jwt/app:v1")
	if out, err := push("jwt/other"); err == nil {
		t.Errorf("crane append with a pull-only token succeeded: %s", out)
	}
	crane.run("auth", "login", ts.registry, "-u", "someone-else", "-p", pushPull)
	if out, err := crane.try("digest", "--insecure", ts.registry+"/jwt/app:v1"); err == nil {
		t.Errorf("crane with a login token under another user name succeeded: %s", out)
	}
}

// TestTokenFlowConformance runs the conformance suite with the token flow
// on: the suite follows the Bearer challenges to /token.
func TestTokenFlowConformance(t *testing.T) {
	ts := startTokenStack(t)
	before := ts.tokenRequests()

	runConformance(t, ts.stack)

	ts.assertUsedTokens(t, "the conformance suite", before)
}

// TestFailedLoginsAreRateLimited makes failed logins through the gateway
// until the auth service answers 429, and checks the log names no secret.
func TestFailedLoginsAreRateLimited(t *testing.T) {
	ts := startTokenStack(t, "KEEL_AUTH_FAILURE_LIMIT=3")
	client := func(pass string) registryClient {
		return registryClient{t: t, base: "http://" + ts.registry,
			creds: &credentials{ts.admin.user, pass}}
	}
	guesses := []string{"guess-one", "guess-two", "guess-three"}

	for _, g := range guesses {
		if resp := client(g).do("GET", "/token?service=keel", nil, nil); resp.status != 401 {
			t.Fatalf("GET /token with a wrong password = %d, want 401", resp.status)
		}
	}
	resp := client(ts.admin.pass).do("GET", "/token?service=keel", nil, nil)

	assertOCIError(t, "login after 3 failures", resp, http.StatusTooManyRequests,
		"TOOMANYREQUESTS")
	if resp.header.Get("Retry-After") == "" {
		t.Errorf("429 answer has no Retry-After header")
	}
	for _, p := range ts.procs {
		logs := p.logs.String()
		for _, secret := range append(guesses, ts.admin.pass) {
			if strings.Contains(logs, secret) {
				t.Errorf("the %s process logged a password", p.name)
			}
		}
		if p.name == "auth" && strings.Count(logs, `msg="login failed"`) != 3 {
			t.Errorf("auth log has %d failed-login lines, want 3",
				strings.Count(logs, `msg="login failed"`))
		}
	}
}

// BenchmarkManifestHead measures HEAD of a manifest by tag against one
// multi-process stack three ways: anonymous (pull allowed by the policy,
// so no credential is checked: auth off), a basic login (the gateway
// caches the auth service's decision) and a bearer token from /token
// (verified by the gateway itself). The three are interleaved in rounds of
// benchBatch requests each, in rotating order, so that they share the same
// moments of the machine's load; each reports req/s, and basic and bearer
// their overhead over anonymous in percent. One op is one request of each
// kind.
//
//	go test ./e2e -run '^$' -bench ManifestHead -benchtime 2000x
func BenchmarkManifestHead(b *testing.B) {
	ts := startTokenStack(b)
	const repo, tag = "public/bench", "v1"
	base := "http://" + ts.registry
	pushTinyImage(b, base, ts.admin, repo, tag)
	token := fetchToken(b, base, ts.admin, "repository:"+repo+":pull")
	workers := benchParallelism * runtime.GOMAXPROCS(0)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	path := base + "/v2/" + repo + "/manifests/" + tag

	modes := []struct {
		name string
		auth func(*http.Request)
	}{
		{"anonymous", func(*http.Request) {}},
		{"basic", func(r *http.Request) { r.SetBasicAuth(ts.admin.user, ts.admin.pass) }},
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }},
	}
	// Warm every path up (connections, caches, the gateway's token keys)
	// before anything is timed.
	for _, m := range modes {
		if n := headBatch(client, path, m.auth, benchBatch, workers); n > 0 {
			b.Fatalf("warm-up: %d HEAD %s as %s did not answer 200", n, path, m.name)
		}
	}

	elapsed := make([]time.Duration, len(modes))
	sent := make([]int, len(modes))
	b.ResetTimer()
	for round := 0; sent[0] < b.N; round++ {
		for k := range modes {
			i := (k + round) % len(modes)
			n := min(benchBatch, b.N-sent[i])
			start := time.Now()
			if failed := headBatch(client, path, modes[i].auth, n, workers); failed > 0 {
				b.Fatalf("%d of %d HEAD requests as %s did not answer 200", failed, n,
					modes[i].name)
			}
			elapsed[i] += time.Since(start)
			sent[i] += n
		}
	}
	b.StopTimer()

	rates := make([]float64, len(modes))
	for i, m := range modes {
		rates[i] = float64(sent[i]) / elapsed[i].Seconds()
		b.ReportMetric(rates[i], m.name+"-req/s")
	}
	for i := 1; i < len(modes); i++ {
		overhead := 100 * (rates[0] - rates[i]) / rates[0]
		b.ReportMetric(overhead, modes[i].name+"-overhead-%")
	}
	b.ReportMetric(0, "ns/op")
}

// benchBatch is how many requests of one kind run back to back in a round.
const benchBatch = 200

// headBatch sends n HEAD requests to url with auth applied, over workers
// concurrent connections, and returns how many did not answer 200.
func headBatch(client *http.Client, url string, auth func(*http.Request), n, workers int) int {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if !headOK(client, url, auth) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// benchParallelism is the number of concurrent requests per CPU: enough to
// keep every process busy, so the benchmark measures throughput rather
// than one request's latency.
const benchParallelism = 8

// headOK sends HEAD url with auth applied and reports a 200.
func headOK(client *http.Client, url string, auth func(*http.Request)) bool {
	req, err := http.NewRequest(http.MethodHead, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("Accept", mtManifest)
	auth(req)
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pushTinyImage pushes an image with an empty config and no layers.
func pushTinyImage(tb testing.TB, base string, c credentials, repo, tag string) {
	tb.Helper()
	config := []byte("{}")
	digest := sha256Digest(config)
	manifest, _ := json.Marshal(ociManifest{
		SchemaVersion: 2, MediaType: mtManifest,
		Config: descriptor{MediaType: mtConfig, Digest: digest, Size: int64(len(config))},
		Layers: []descriptor{},
	})
	send := func(method, path, contentType string, body []byte, want int) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
		if err != nil {
			tb.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		req.SetBasicAuth(c.user, c.pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			tb.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != want {
			got, _ := io.ReadAll(resp.Body)
			tb.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, got, want)
		}
	}
	send("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest, "application/octet-stream",
		config, http.StatusCreated)
	send("PUT", "/v2/"+repo+"/manifests/"+tag, mtManifest, manifest, http.StatusCreated)
}

// fetchToken gets a registry token for scope from the token endpoint.
func fetchToken(tb testing.TB, base string, c credentials, scope string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := url.Values{"service": {"keel"}, "scope": {scope}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/token?"+q.Encode(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth(c.user, c.pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET /token: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Token == "" {
		tb.Fatalf("GET /token = %d, no token (%v)", resp.StatusCode, errors.Join(err,
			fmt.Errorf("status %d", resp.StatusCode)))
	}
	return body.Token
}
