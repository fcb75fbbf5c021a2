package deploy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// interpolation is one ${NAME:-default} in docker-compose.yml.
var interpolation = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::?-([^}]*))?\}`)

// interpolate replaces every ${NAME:-default} in s by its default, as
// docker-compose does with NAME unset, and returns the names it met and
// those without a default.
func interpolate(s string) (out string, names, bare []string) {
	out = interpolation.ReplaceAllStringFunc(s, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		names = append(names, sub[1])
		if !strings.Contains(m, "-") {
			bare = append(bare, sub[1])
		}
		return sub[2]
	})
	return out, names, bare
}

// composeFile is the part of docker-compose.yml the tests look at.
type composeFile struct {
	Version  string
	Services map[string]composeService
	Volumes  map[string]any
}

type composeService struct {
	Image           string
	Scale           int
	Environment     map[string]string
	Ports           []string
	Volumes         []string
	StopGracePeriod string `yaml:"stop_grace_period"`
	Healthcheck     struct {
		Test []string
	}
	DependsOn map[string]struct {
		Condition string
	} `yaml:"depends_on"`
}

// loadCompose parses docker-compose.yml with every ${NAME:-default}
// replaced by its default, and returns every name it interpolates.
func loadCompose(t *testing.T) (composeFile, []string) {
	t.Helper()
	raw, err := os.ReadFile(composePath)
	if err != nil {
		t.Fatal(err)
	}
	text, names, bare := interpolate(string(raw))
	if len(bare) > 0 {
		t.Errorf("docker-compose.yml uses %v without a default; want every variable "+
			"to have one so that a plain `docker-compose up` works", bare)
	}

	var f composeFile
	if err := yaml.Unmarshal([]byte(text), &f); err != nil {
		t.Fatalf("parse docker-compose.yml: %v", err)
	}
	if len(f.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}
	return f, names
}

func TestComposeFile(t *testing.T) {
	f, vars := loadCompose(t)
	known := stackEnv(t)
	documented := readmeEnv(t)

	for _, v := range vars {
		if !known[v] && !slices.Contains(composeOnlyVars, v) {
			t.Errorf("docker-compose.yml interpolates %s, which keel does not read "+
				"and which is not one of %v", v, composeOnlyVars)
		}
	}

	ports := map[string]int{}   // compose service -> listen port
	targets := map[string]int{} // keel target -> number of services
	for name, svc := range f.Services {
		where := "compose service " + name
		for k := range svc.Environment {
			checkEnvName(t, where, k, known, documented)
		}
		target, port := listenPort(t, where, svc.Environment)
		targets[target]++
		ports[name] = port
		if target != name {
			t.Errorf("%s runs KEEL_TARGET=%s; want the service named after its target",
				where, target)
		}

		if got := probePort(t, where+" healthcheck", svc.Healthcheck.Test[1:]); got != port {
			t.Errorf("%s: health check aims at port %d, want %d", where, got, port)
		}
		if svc.Image == "" {
			t.Errorf("%s has no image", where)
		}
		for dep, cond := range svc.DependsOn {
			if _, ok := f.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is not a service", where, dep)
			}
			if cond.Condition != "service_healthy" {
				t.Errorf("%s depends on %s with condition %q, want service_healthy",
					where, dep, cond.Condition)
			}
		}
		checkGrace(t, where, svc.StopGracePeriod, svc.Environment["KEEL_STOP_TIMEOUT"])
	}
	for _, want := range []string{"gateway", "auth", "upload", "manifest", "s3"} {
		if targets[want] != 1 {
			t.Errorf("compose runs target %s in %d services, want 1", want, targets[want])
		}
	}

	// Dial targets name a service and its listen port.
	for name, svc := range f.Services {
		for v, want := range dialVars {
			if val, ok := svc.Environment[v]; ok {
				checkDial(t, "compose service "+name, v, val, want, ports)
			}
		}
	}

	if got := f.Services["upload"].Scale; got < 2 {
		t.Errorf("compose upload scale = %d, want at least 2", got)
	}
	gw := f.Services["gateway"]
	if len(gw.Ports) != 1 || !strings.HasPrefix(gw.Ports[0], "127.0.0.1:") ||
		!strings.HasSuffix(gw.Ports[0], fmt.Sprintf(":%d", ports["gateway"])) {
		t.Errorf("compose gateway ports = %q, want one 127.0.0.1:<port>:%d",
			gw.Ports, ports["gateway"])
	}
	if len(f.Services["s3"].Volumes) == 0 {
		t.Error("compose s3 service has no volume: pushed data would not outlive it")
	}

	// The S3 keys the services sign with are the ones the s3 service takes.
	s3 := f.Services["s3"].Environment
	for _, name := range []string{"upload", "manifest", "auth"} {
		env := f.Services[name].Environment
		for _, k := range []string{"KEEL_S3_ACCESS_KEY_ID", "KEEL_S3_SECRET_ACCESS_KEY",
			"KEEL_S3_REGION"} {
			if env[k] != s3[k] || env[k] == "" {
				t.Errorf("compose %s has %s=%q, s3 has %q; want them equal and set",
					name, k, env[k], s3[k])
			}
		}
		if env["KEEL_S3_ENDPOINT"] != fmt.Sprintf("http://s3:%d", ports["s3"]) {
			t.Errorf("compose %s has KEEL_S3_ENDPOINT=%q, want http://s3:%d",
				name, env["KEEL_S3_ENDPOINT"], ports["s3"])
		}
		if env["KEEL_S3_PATH_STYLE"] != "true" {
			t.Errorf("compose %s has KEEL_S3_PATH_STYLE=%q, want true (the s3 "+
				"target needs path style)", name, env["KEEL_S3_PATH_STYLE"])
		}
	}
}

// TestComposeConfigValid has docker-compose itself parse and validate the
// file, when it is installed.
func TestComposeConfigValid(t *testing.T) {
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("docker-compose is not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd := exec.CommandContext(ctx, bin, "-f", composePath, "-p", "keel-config-check",
		"config", "--quiet")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}

	// The replicas docker-compose 1.29 will start for upload, read back.
	cmd = exec.CommandContext(ctx, bin, "-f", composePath, "-p", "keel-config-check",
		"config")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose config: %v", err)
	}
	var f composeFile
	if err := yaml.Unmarshal(out, &f); err != nil {
		t.Fatalf("parse docker-compose config output: %v", err)
	}
	if got := f.Services["upload"].Scale; got != 2 {
		t.Errorf("docker-compose config: upload scale = %d, want 2", got)
	}
}
