package deploy

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keel-registry/keel/internal/stack"
)

// Paths of the deployment files, relative to this package's folder.
const (
	composePath = "../docker-compose.yml"
	buildScript = "../scripts/build-images.sh"
	kubeDir     = "kubernetes"
	deployDoc   = "../docs/deploy.md"
	readmePath  = "../README.md"
)

// composeOnlyVars are the variables docker-compose.yml interpolates that no
// keel process reads: they pick the image and the published port.
var composeOnlyVars = []string{"KEEL_IMAGE", "KEEL_GATEWAY_PORT"}

// listenVars maps each target to the variable holding its listen address
// and that address's default for a process running that target alone.
var listenVars = map[string]struct{ name, def string }{
	"gateway":  {"KEEL_HTTP_ADDR", stack.DefaultHTTPAddr},
	"auth":     {"KEEL_AUTH_ADDR", stack.DefaultAuthAddr},
	"upload":   {"KEEL_UPLOAD_ADDR", stack.DefaultUploadAddr},
	"manifest": {"KEEL_MANIFEST_ADDR", stack.DefaultManifestAddr},
	"s3":       {"KEEL_S3_ADDR", stack.DefaultS3Addr},
}

// dialVars maps each dial-target variable to the target it must reach.
var dialVars = map[string]string{
	"KEEL_AUTH_TARGET":     "auth",
	"KEEL_UPLOAD_TARGET":   "upload",
	"KEEL_MANIFEST_TARGET": "manifest",
}

// stackEnv returns every environment variable stack.ConfigFromEnv reads:
// the configuration keel processes actually take.
func stackEnv(t *testing.T) map[string]bool {
	t.Helper()
	read := map[string]bool{}
	_, _ = stack.ConfigFromEnv(func(name string) string {
		read[name] = true
		return ""
	})
	if !read["KEEL_TARGET"] || len(read) < 10 {
		t.Fatalf("stack.ConfigFromEnv read %v, want KEEL_TARGET and the rest", keys(read))
	}
	return read
}

// readmeEnv returns the KEEL_* variables the README's configuration table
// documents, or nil when the README has no such table.
func readmeEnv(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	rows := regexp.MustCompile("(?m)^\\| `(KEEL_[A-Z0-9_]+)` \\|").FindAllSubmatch(b, -1)
	if len(rows) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, r := range rows {
		out[string(r[1])] = true
	}
	return out
}

// portOf returns the port of a listen address such as ":9002" or
// "0.0.0.0:9000".
func portOf(t *testing.T, where, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("%s: address %q: %v", where, addr, err)
		return 0
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Errorf("%s: address %q has no numeric port", where, addr)
	}
	return n
}

// listenPort returns the port a process with this environment listens on
// for its target, and the target.
func listenPort(t *testing.T, where string, env map[string]string) (string, int) {
	t.Helper()
	target := env["KEEL_TARGET"]
	lv, ok := listenVars[target]
	if !ok {
		t.Errorf("%s: KEEL_TARGET=%q, want exactly one of gateway, auth, upload, "+
			"manifest, s3", where, target)
		return target, 0
	}
	addr := env[lv.name]
	if addr == "" {
		addr = lv.def
	}
	return target, portOf(t, where+" "+lv.name, addr)
}

// probeAddr is the address a "keel health" check aims at: the container
// itself.
var probeAddr = regexp.MustCompile(`^(?:https?://)?(127\.0\.0\.1|localhost):(\d+)(?:/.*)?$`)

// probePort returns the port a "keel health ..." command checks.
func probePort(t *testing.T, where string, cmd []string) int {
	t.Helper()
	if len(cmd) < 4 || cmd[0] != "/keel" || cmd[1] != "health" {
		t.Errorf("%s: check %q, want /keel health -grpc|-http ...", where, cmd)
		return 0
	}
	for i, a := range cmd[:len(cmd)-1] {
		if a != "-grpc" && a != "-http" {
			continue
		}
		m := probeAddr.FindStringSubmatch(cmd[i+1])
		if m == nil {
			t.Errorf("%s: check %q must aim at the container itself (127.0.0.1)",
				where, cmd)
			return 0
		}
		n, _ := strconv.Atoi(m[2])
		return n
	}
	t.Errorf("%s: check %q has neither -grpc nor -http", where, cmd)
	return 0
}

// checkDial checks that a dial target such as "dns:///upload:9002" names
// the service running target want, at its listen port.
func checkDial(t *testing.T, where, name, val, want string, ports map[string]int) {
	t.Helper()
	hostPort, ok := strings.CutPrefix(val, "dns:///")
	if !ok {
		t.Errorf("%s: %s=%q, want dns:///<service>:<port> so that every replica "+
			"is balanced", where, name, val)
		return
	}
	host, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		t.Errorf("%s: %s=%q: %v", where, name, val, err)
		return
	}
	if host != want {
		t.Errorf("%s: %s=%q names %s, want %s", where, name, val, host, want)
	}
	if port, _ := strconv.Atoi(p); port != ports[want] {
		t.Errorf("%s: %s=%q dials port %d, want %s's port %d",
			where, name, val, port, want, ports[want])
	}
}

// checkGrace checks that a grace period covers the stack's shutdown: at
// most two steps that wait up to KEEL_STOP_TIMEOUT each.
func checkGrace(t *testing.T, where, grace, stopTimeout string) {
	t.Helper()
	stop := stack.DefaultStopTimeout
	if stopTimeout != "" {
		d, err := time.ParseDuration(stopTimeout)
		if err != nil {
			t.Errorf("%s: KEEL_STOP_TIMEOUT=%q: %v", where, stopTimeout, err)
			return
		}
		stop = d
	}
	g, err := time.ParseDuration(grace)
	if err != nil {
		t.Errorf("%s: grace period %q: %v", where, grace, err)
		return
	}
	if g < 2*stop {
		t.Errorf("%s: grace period %v, want at least 2 x KEEL_STOP_TIMEOUT = %v",
			where, g, 2*stop)
	}
}

// checkEnvName checks that a variable a manifest sets is one keel reads,
// and one the README documents when it has a configuration table.
func checkEnvName(t *testing.T, where, name string, known, documented map[string]bool) {
	t.Helper()
	if !known[name] {
		t.Errorf("%s sets %s, which stack.ConfigFromEnv does not read", where, name)
	}
	if documented != nil && !documented[name] {
		t.Errorf("%s sets %s, which the README's configuration table lacks", where, name)
	}
}

// buildImages returns the image tag scripts/build-images.sh builds by
// default.
func buildImages(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(buildScript)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\$\{KEEL_IMAGE:-([^}]+)\}`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no ${KEEL_IMAGE:-<default tag>}", buildScript)
	}
	return map[string]bool{string(m[1]): true}
}

// TestDeployDocListsVariables fails when the deployment guide does not
// mention a variable the deployment files set.
func TestDeployDocListsVariables(t *testing.T) {
	doc, err := os.ReadFile(deployDoc)
	if err != nil {
		t.Fatal(err)
	}
	f, vars := loadCompose(t)
	names := map[string]bool{}
	for _, v := range vars {
		names[v] = true
	}
	for _, svc := range f.Services {
		for k := range svc.Environment {
			names[k] = true
		}
	}
	for _, o := range loadKube(t) {
		for k := range o.Data {
			names[k] = true
		}
		for k := range o.StringData {
			names[k] = true
		}
	}
	for _, n := range keys(names) {
		if !bytes.Contains(doc, []byte("`"+n+"`")) {
			t.Errorf("%s does not mention `%s`, which the deployment files set",
				deployDoc, n)
		}
	}
}

// keys returns m's keys, sorted.
func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
