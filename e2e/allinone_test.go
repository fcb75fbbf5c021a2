package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"testing"
)

// TestAllInOneKeepsDataAcrossRestarts runs the default target (every
// concern in one process, embedded S3 in a data folder), pushes an image,
// stops the process with SIGTERM, starts a new one on the same folder and
// pulls the image back.
func TestAllInOneKeepsDataAcrossRestarts(t *testing.T) {
	bin := keelBinary(t)
	work := t.TempDir()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	addr := ports[0]
	admin := credentials{"admin", randomHex(12)}
	env := []string{
		"KEEL_HTTP_ADDR=" + addr,
		"KEEL_DATA_DIR=" + filepath.Join(work, "data"),
		"KEEL_USER=" + admin.user + ":" + admin.pass,
		"KEEL_PART_SIZE=" + e2ePartSize,
	}
	start := func() *process {
		t.Helper()
		p, err := startProcess(bin, "all", work, env)
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		if err := waitGateway(p, addr); err != nil {
			p.stop()
			t.Fatalf("all-in-one process not ready: %v\n%s", err, p.logs.tail(100))
		}
		return p
	}
	client := registryClient{t: t, base: "http://" + addr, creds: &admin}
	img := newImage(t, layerSizes...)

	first := start()
	pushImage(t, client, "restart/app", "v1", img)
	assertPullable(t, client, "restart/app", "v1", img)
	if err := first.stop(); err != nil {
		t.Fatalf("stop the first process: %v\n%s", err, first.logs.tail(100))
	}

	second := start()
	defer func() {
		if err := second.stop(); err != nil {
			t.Errorf("stop the second process: %v\n%s", err, second.logs.tail(100))
		}
	}()
	assertPullable(t, client, "restart/app", "v1", img)
	resp := client.do("GET", "/v2/restart/app/tags/list", nil, nil)
	var tags struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	err = json.Unmarshal(resp.body, &tags)
	if resp.status != http.StatusOK || err != nil || tags.Name != "restart/app" ||
		len(tags.Tags) != 1 || tags.Tags[0] != "v1" {
		t.Errorf("GET tags/list after restart = %d %s, want 200 with the one tag v1",
			resp.status, resp.body)
	}
}
