package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolTimeout bounds one run of a client tool.
const toolTimeout = 5 * time.Minute

// pinnedTool returns the path of a tool that scripts/install-tools.sh put
// in .bin/. A missing tool skips the test, or fails it under CI.
func pinnedTool(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(repoRoot(t), ".bin", name)
	if info, err := os.Stat(path); err != nil || info.Mode()&0o111 == 0 {
		missingTool(t, name, "run scripts/install-tools.sh")
	}
	return path
}

// pathTool returns the path of a tool found on PATH. A missing tool skips
// the test, or fails it under CI.
func pathTool(t *testing.T, name, hint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		missingTool(t, name, hint)
	}
	return path
}

func missingTool(t *testing.T, name, hint string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing (%s); CI needs every tool", name, hint)
	}
	t.Skipf("%s is missing (%s)", name, hint)
}

// toolEnv returns an environment for client tools with a fresh home, so
// that logins and configuration stay inside the test.
func toolEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	home := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "HOME", "DOCKER_CONFIG", "REGCTL_CONFIG", "XDG_CONFIG_HOME", "REGISTRY_AUTH_FILE":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HOME="+home,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"),
		"REGCTL_CONFIG="+filepath.Join(home, "regctl.json"),
	)
	return append(env, extra...)
}

// tool runs one command of a client tool and returns its standard output.
// secret is blanked out of the command line in failure messages.
type tool struct {
	t      *testing.T
	path   string
	env    []string
	dir    string
	secret string
}

func (tl tool) run(args ...string) string {
	tl.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, tl.path, args...)
	cmd.Env = tl.env
	cmd.Dir = tl.dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr

	if err := cmd.Run(); err != nil {
		line := strings.Join(append([]string{filepath.Base(tl.path)}, args...), " ")
		if tl.secret != "" {
			line = strings.ReplaceAll(line, tl.secret, "***")
		}
		tl.t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", line, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// registryClient sends hand-built requests to a registry as one account
// (none for anonymous).
type registryClient struct {
	t     *testing.T
	base  string
	creds *credentials
}

func (c registryClient) do(method, path string, header http.Header, body []byte) response {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		c.t.Fatalf("NewRequest(%s %s) = %v", method, path, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if c.creds != nil {
		req.SetBasicAuth(c.creds.user, c.creds.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read the body of %s %s: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: got}
}
