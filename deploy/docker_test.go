package deploy

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Bounds of the end-to-end test's waits.
const (
	buildTimeout   = 20 * time.Minute
	upTimeout      = 5 * time.Minute
	healthyTimeout = 3 * time.Minute
	pushTimeout    = 10 * time.Minute
	commandTimeout = 2 * time.Minute
	downTimeout    = 3 * time.Minute
)

// Shape of the test's stack and images.
const (
	uploadReplicas = 3
	// stackContainers is gateway, auth, manifest, s3 and the upload
	// replicas.
	stackContainers = 4 + uploadReplicas
	bigFileSize     = 1 << 30
	// killAfter is how much one upload replica must have received since the
	// big push began before the test kills it: well into the stream, well
	// before its end.
	killAfter = 256 << 20
	// probeLine is what the test's image prints when run without arguments.
	probeLine = "keel e2e probe: this image went through the registry"
)

// probeSource is the test image's only program: it prints probeLine, or
// with "sha256 FILE" the SHA-256 of FILE, so that the test can check a
// pulled layer's bytes without tools in the image.
const probeSource = `package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "sha256" {
		f, err := os.Open(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(hex.EncodeToString(h.Sum(nil)))
		return
	}
	fmt.Println(` + "`" + probeLine + "`" + `)
}
`

// TestDockerComposeStack runs docker-compose.yml under the Docker engine
// with three upload replicas, and pushes and pulls real images through it
// with the docker CLI: a small one, then a 1 GiB layer while an upload
// replica is killed mid-stream. It stops a replica gracefully, restarts the
// stack keeping its volume, and pulls everything back.
func TestDockerComposeStack(t *testing.T) {
	if os.Getenv("KEEL_DOCKER_TEST") != "1" {
		t.Skip("set KEEL_DOCKER_TEST=1 to run the compose stack under Docker " +
			"(needs docker, docker-compose and about 4 GiB of disk)")
	}
	for _, bin := range []string{"docker", "docker-compose", "go"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("KEEL_DOCKER_TEST=1 needs %s: %v", bin, err)
		}
	}

	s := newStack(t)
	s.buildImage()
	s.up()
	s.waitHealthy()
	s.login()
	probe := s.buildProbe()

	small := s.ref("e2e/probe", "small")
	s.importImage(small, probe, 0)
	s.push(small)
	s.rmi(small)
	s.pull(small)
	if got := s.runImage(small); got != probeLine {
		t.Fatalf("docker run %s printed %q, want %q", small, got, probeLine)
	}
	t.Logf("small image pushed, pulled and run")

	big := s.ref("e2e/big", "1gib")
	bigSum := s.importImage(big, probe, bigFileSize)
	killed := s.pushKillingUpload(big)
	s.rmi(big)
	s.pull(big)
	if got := s.runImage(big, "sha256", "/big.bin"); got != bigSum {
		t.Fatalf("sha256 of /big.bin in the pulled image = %s, want %s", got, bigSum)
	}
	t.Logf("1 GiB layer pulled back byte-identical after %.12s was killed mid-push", killed)

	afterStop := s.stopUploadGracefully(killed)

	s.down(false)
	s.up()
	s.waitHealthy()
	for _, ref := range []string{small, afterStop, big} {
		s.rmi(ref)
		s.pull(ref)
	}
	for _, ref := range []string{small, afterStop} {
		if got := s.runImage(ref); got != probeLine {
			t.Errorf("after down and up, docker run %s printed %q, want %q",
				ref, got, probeLine)
		}
	}
	if got := s.runImage(big, "sha256", "/big.bin"); got != bigSum {
		t.Errorf("after down and up, sha256 of /big.bin = %s, want %s", got, bigSum)
	}
	t.Logf("after docker-compose down and up, everything pushed is still pullable")
}

// dockerStack is one compose project of the end-to-end test, and
// everything the test made that must be removed.
type dockerStack struct {
	t     *testing.T
	start time.Time

	root    string // the repository
	dir     string // the test's temporary folder
	project string
	image   string // the keel image the test builds
	port    int    // the gateway's published port on 127.0.0.1
	user    string // the read-write login, name:password
	// env is added to every command: a private DOCKER_CONFIG (the login
	// stays out of the user's) and the compose file's variables.
	env []string
	// refs are the images the test tagged, pushed or pulled.
	refs []string
	// runs are the names of the containers the test ran its images in.
	runs []string
}

// newStack picks names, credentials and a free port, and registers the
// clean-up of everything the test will make.
func newStack(t *testing.T) *dockerStack {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	id := randomHex(t, 4)
	s := &dockerStack{
		t:       t,
		start:   time.Now(),
		root:    root,
		dir:     t.TempDir(),
		project: "keel-e2e-" + id,
		image:   "keel:e2e-" + id,
		port:    freePort(t),
		user:    "e2e:" + randomHex(t, 12),
	}
	dockerConfig := filepath.Join(s.dir, "docker-config")
	if err := os.Mkdir(dockerConfig, 0o700); err != nil {
		t.Fatal(err)
	}
	// Every variable the compose file reads is set, so that nothing from
	// the caller's shell or an .env file changes the stack under test.
	s.env = []string{
		"DOCKER_CONFIG=" + dockerConfig,
		"KEEL_IMAGE=" + s.image,
		"KEEL_GATEWAY_PORT=" + strconv.Itoa(s.port),
		"KEEL_USER=" + s.user,
		"KEEL_READONLY_USER=reader:" + randomHex(t, 12),
		"KEEL_ANONYMOUS_PULL=false",
		"KEEL_S3_ACCESS_KEY_ID=e2e" + randomHex(t, 6),
		"KEEL_S3_SECRET_ACCESS_KEY=" + randomHex(t, 20),
		"KEEL_PART_SIZE=16MiB",
		"KEEL_LOG_LEVEL=info",
		"KEEL_LOG_FORMAT=text",
	}
	t.Cleanup(s.cleanup)
	t.Logf("project %s, image %s, gateway on 127.0.0.1:%d", s.project, s.image, s.port)
	return s
}

// cleanup removes the project's containers, network and volume and every
// image the test built, tagged or pulled. On failure it logs the services'
// last lines first.
func (s *dockerStack) cleanup() {
	if s.t.Failed() {
		out, _ := s.command(commandTimeout, "docker-compose", s.compose("logs",
			"--no-color", "--tail", "60")...)
		s.t.Logf("last lines of the services' logs:\n%s", out)
	}
	if out, err := s.command(downTimeout, "docker-compose",
		s.compose("down", "-v", "--remove-orphans", "--timeout", "30")...); err != nil {
		s.t.Errorf("docker-compose down -v: %v\n%s", err, out)
	}
	if len(s.runs) > 0 {
		// docker run --rm removes them, unless the test gave up on one.
		_, _ = s.command(commandTimeout, "docker", append([]string{"rm", "-f"},
			s.runs...)...)
	}
	images := append([]string{s.image}, s.refs...)
	out, err := s.command(commandTimeout, "docker", append([]string{"image", "rm", "-f"},
		images...)...)
	if err != nil && !strings.Contains(out, "No such image") {
		s.t.Errorf("docker image rm: %v\n%s", err, out)
	}
}

// logf logs a progress line with the time since the test began.
func (s *dockerStack) logf(format string, args ...any) {
	s.t.Helper()
	s.t.Logf("[%6.1fs] %s", time.Since(s.start).Seconds(), fmt.Sprintf(format, args...))
}

// command runs name with args, bounded by timeout, with the stack's
// environment, and returns its combined output.
func (s *dockerStack) command(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.commandContext(ctx, nil, name, args...)
}

// commandContext runs name with args until ctx ends, feeding it stdin.
func (s *dockerStack) commandContext(
	ctx context.Context, stdin io.Reader, name string, args ...string,
) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.root
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdin = stdin
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		err = fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), err
}

// must runs a command and fails the test when it fails.
func (s *dockerStack) must(timeout time.Duration, name string, args ...string) string {
	s.t.Helper()
	out, err := s.command(timeout, name, args...)
	if err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	return out
}

// compose returns docker-compose arguments for this project.
func (s *dockerStack) compose(args ...string) []string {
	return append([]string{"-f", filepath.Join(s.root, "docker-compose.yml"),
		"-p", s.project}, args...)
}

// ref returns an image reference in the registry under test.
func (s *dockerStack) ref(repo, tag string) string {
	return fmt.Sprintf("127.0.0.1:%d/%s:%s", s.port, repo, tag)
}

func (s *dockerStack) buildImage() {
	s.t.Helper()
	s.logf("building %s with scripts/build-images.sh", s.image)
	s.must(buildTimeout, filepath.Join(s.root, "scripts", "build-images.sh"), s.image)
}

// up starts the stack with uploadReplicas upload replicas.
func (s *dockerStack) up() {
	s.t.Helper()
	s.logf("docker-compose up -d --scale upload=%d", uploadReplicas)
	s.must(upTimeout, "docker-compose", s.compose("up", "-d", "--scale",
		fmt.Sprintf("upload=%d", uploadReplicas))...)
}

// down stops the stack and removes its containers; volumes tells whether
// the data volume goes too.
func (s *dockerStack) down(volumes bool) {
	s.t.Helper()
	args := []string{"down", "--timeout", "30"}
	if volumes {
		args = append(args, "-v")
	}
	s.logf("docker-compose %s", strings.Join(args, " "))
	s.must(downTimeout, "docker-compose", s.compose(args...)...)
}

// containers returns the IDs of the project's containers of one service,
// or of all services when service is "".
func (s *dockerStack) containers(service string) []string {
	s.t.Helper()
	args := s.compose("ps", "-q")
	if service != "" {
		args = append(args, service)
	}
	return strings.Fields(s.must(commandTimeout, "docker-compose", args...))
}

// waitHealthy waits until every container of the stack reports healthy.
func (s *dockerStack) waitHealthy() {
	s.t.Helper()
	s.logf("waiting for %d healthy containers", stackContainers)
	deadline := time.Now().Add(healthyTimeout)
	last := ""
	for {
		ids := s.containers("")
		states := ""
		healthy := 0
		if len(ids) > 0 {
			states = s.must(commandTimeout, "docker", append([]string{"inspect", "--format",
				"{{.Name}} {{.State.Status}} " +
					"{{if .State.Health}}{{.State.Health.Status}}{{end}}"}, ids...)...)
			healthy = strings.Count(states, " healthy")
		}
		if healthy == stackContainers && len(ids) == stackContainers {
			s.logf("all %d containers healthy", healthy)
			return
		}
		if states != last {
			s.logf("containers:\n%s", states)
			last = states
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("after %v, %d of %d containers healthy:\n%s",
				healthyTimeout, healthy, stackContainers, states)
		}
		time.Sleep(2 * time.Second)
	}
}

// login logs the docker CLI in to the gateway over plain HTTP, which the
// engine allows for 127.0.0.0/8 without configuration, after checking that
// a wrong password is refused.
func (s *dockerStack) login() {
	s.t.Helper()
	cidrs := s.must(commandTimeout, "docker", "info", "--format",
		"{{range .RegistryConfig.InsecureRegistryCIDRs}}{{.}} {{end}}")
	if !strings.Contains(cidrs, "127.0.0.0/8") {
		s.t.Fatalf("the Docker engine's insecure registry ranges are %q; the test "+
			"needs 127.0.0.0/8 there (the engine's default)", cidrs)
	}

	name, password, _ := strings.Cut(s.user, ":")
	host := fmt.Sprintf("127.0.0.1:%d", s.port)
	if out, err := s.login1(host, name, password+"-wrong"); err == nil {
		s.t.Fatalf("docker login with a wrong password succeeded:\n%s", out)
	}
	out, err := s.login1(host, name, password)
	if err != nil {
		s.t.Fatalf("%v\n%s", err, out)
	}
	s.logf("docker login %s: %s", host, lastLine(out))
}

// login1 runs one docker login, the password on stdin.
func (s *dockerStack) login1(host, name, password string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	return s.commandContext(ctx, strings.NewReader(password), "docker", "login",
		"--username", name, "--password-stdin", host)
}

// buildProbe builds the test image's static program and returns its path.
func (s *dockerStack) buildProbe() string {
	s.t.Helper()
	dir := filepath.Join(s.dir, "probe")
	if err := os.Mkdir(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	files := map[string]string{
		"go.mod":  "module probe\n\ngo 1.22\n",
		"main.go": probeSource,
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			s.t.Fatal(err)
		}
	}

	bin := filepath.Join(dir, "probe")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux",
		"GOARCH="+runtime.GOARCH, "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		s.t.Fatalf("build the probe program: %v\n%s", err, out)
	}
	return bin
}

// importImage makes an image ref from a root filesystem holding the probe
// program, a small random file (so that every image has a new layer) and,
// when bigSize > 0, /big.bin: bigSize random, incompressible bytes. It
// returns the SHA-256 of /big.bin, or "".
func (s *dockerStack) importImage(ref, probe string, bigSize int64) string {
	s.t.Helper()
	rootfs := filepath.Join(s.dir, "rootfs.tar")
	defer os.Remove(rootfs)
	sum, err := writeRootFS(rootfs, probe, bigSize)
	if err != nil {
		s.t.Fatalf("write root filesystem: %v", err)
	}

	s.refs = append(s.refs, ref)
	s.logf("docker import %s", ref)
	s.must(pushTimeout, "docker", "import", "--change", `ENTRYPOINT ["/probe"]`,
		rootfs, ref)
	return sum
}

// writeRootFS writes a tar of /probe, /nonce and, when bigSize > 0,
// /big.bin, and returns the SHA-256 of /big.bin ("" without it).
func writeRootFS(path, probe string, bigSize int64) (sum string, err error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)

	prog, err := os.ReadFile(probe)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	for _, e := range []struct {
		name string
		mode int64
		data []byte
	}{{"probe", 0o755, prog}, {"nonce", 0o644, nonce}} {
		hdr := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)),
			ModTime: time.Now(), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.data); err != nil {
			return "", err
		}
	}

	if bigSize > 0 {
		hdr := &tar.Header{Name: "big.bin", Mode: 0o644, Size: bigSize,
			ModTime: time.Now(), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		var seed [32]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return "", err
		}
		h := sha256.New()
		src := io.LimitReader(mathrand.NewChaCha8(seed), bigSize)
		if _, err := io.Copy(io.MultiWriter(tw, h), src); err != nil {
			return "", err
		}
		sum = hex.EncodeToString(h.Sum(nil))
	}

	if err := tw.Close(); err != nil {
		return "", err
	}
	return sum, bw.Flush()
}

func (s *dockerStack) push(ref string) {
	s.t.Helper()
	s.logf("docker push %s", ref)
	out := s.must(pushTimeout, "docker", "push", ref)
	s.logf("pushed: %s", lastLine(out))
}

func (s *dockerStack) pull(ref string) {
	s.t.Helper()
	s.logf("docker pull %s", ref)
	out := s.must(pushTimeout, "docker", "pull", ref)
	s.logf("pulled: %s", lastLine(out))
}

func (s *dockerStack) rmi(ref string) {
	s.t.Helper()
	s.must(commandTimeout, "docker", "image", "rm", ref)
}

// runImage runs ref without a network and returns what it printed.
func (s *dockerStack) runImage(ref string, args ...string) string {
	s.t.Helper()
	name := fmt.Sprintf("%s-run-%d", s.project, len(s.runs)+1)
	s.runs = append(s.runs, name)
	return s.must(pushTimeout, "docker", append([]string{"run", "--rm", "--name", name,
		"--network", "none", ref}, args...)...)
}

// pushKillingUpload pushes ref and, once one upload replica has received
// killAfter bytes since the push began (it is the one streaming the layer),
// kills that replica with SIGKILL. The push must still complete: docker
// retries the layer, and the gateway sends the retry to a live replica.
// It returns the killed container's ID.
func (s *dockerStack) pushKillingUpload(ref string) string {
	s.t.Helper()
	uploads := s.containers("upload")
	if len(uploads) != uploadReplicas {
		s.t.Fatalf("%d upload containers, want %d", len(uploads), uploadReplicas)
	}
	base := s.received(uploads)

	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	s.logf("docker push %s (1 GiB layer), watching the upload replicas", ref)
	go func() {
		out, err := s.commandContext(ctx, nil, "docker", "push", ref)
		done <- result{out, err}
	}()

	var killed string
	var res result
watch:
	for {
		select {
		case res = <-done:
			break watch
		case <-time.After(time.Second):
		}
		if killed != "" {
			continue
		}
		for id, n := range s.received(uploads) {
			got := n - base[id]
			if got < killAfter {
				continue
			}
			s.logf("upload replica %.12s has received %d MB of the push: docker kill",
				id, got>>20)
			s.must(commandTimeout, "docker", "kill", id)
			killed = id
			break
		}
	}
	if killed == "" {
		s.t.Fatalf("the push ended before any upload replica had received %d MB, "+
			"so none was killed mid-push (err %v):\n%s", killAfter>>20, res.err, res.out)
	}
	s.logf("push output:\n%s", res.out)

	// docker retries a failed layer upload by itself (up to five times).
	// If it still gives up, a user would run the push again: so does the
	// test, once, and says so.
	if res.err != nil {
		s.logf("the push failed after the kill (%v); pushing again once, as a "+
			"user would", res.err)
		s.push(ref)
	}
	state := s.must(commandTimeout, "docker", "inspect", "--format",
		"{{.State.Status}}, restarted {{.RestartCount}} time(s)", killed)
	s.logf("the killed replica is now %s", state)

	retried := res.err != nil || strings.Contains(res.out, "Retrying")
	gateway := s.must(commandTimeout, "docker", "logs", s.containers("gateway")[0])
	failed := strings.Count(grepLines(gateway, "blobs/uploads"), " status=5")
	s.logf("docker retried: %v; gateway answered %d upload request(s) with 5xx",
		retried, failed)
	if !retried && failed == 0 {
		s.t.Errorf("killing upload replica %.12s disturbed neither docker nor the "+
			"gateway: the test did not exercise a fail-over", killed)
	}
	return killed
}

// received returns how many bytes each container has received on its
// network interfaces, as docker stats reports it.
func (s *dockerStack) received(ids []string) map[string]int64 {
	s.t.Helper()
	out := s.must(commandTimeout, "docker", append([]string{"stats", "--no-stream",
		"--format", "{{.Container}} {{.NetIO}}"}, ids...)...)
	got := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, err := parseBytes(f[1])
		if err != nil {
			s.t.Fatalf("docker stats line %q: %v", line, err)
		}
		got[f[0]] = n
	}
	return got
}

// parseBytes reads a size as docker stats prints it: "0B", "13.1MB",
// "1.05GB" (decimal units).
func parseBytes(v string) (int64, error) {
	i := strings.IndexFunc(v, func(r rune) bool {
		return (r < '0' || r > '9') && r != '.'
	})
	if i <= 0 {
		return 0, fmt.Errorf("size %q has no number and unit", v)
	}
	num, err := strconv.ParseFloat(v[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", v, err)
	}
	units := map[string]float64{"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9,
		"TB": 1e12, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
	f, ok := units[v[i:]]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q", v, v[i:])
	}
	return int64(num * f), nil
}

// stopUploadGracefully stops one live upload replica with SIGTERM (not the
// one killed before), checks that it drained and exited cleanly within the
// grace period, then pushes and pulls a new image: with the replica gone
// out of rotation every call lands on the replicas left, and none fails.
// It returns the new image's reference.
func (s *dockerStack) stopUploadGracefully(killed string) string {
	s.t.Helper()
	var victim string
	for _, id := range s.containers("upload") {
		running := s.must(commandTimeout, "docker", "inspect", "--format",
			"{{.State.Running}}", id)
		if id != killed && running == "true" {
			victim = id
			break
		}
	}
	if victim == "" {
		s.t.Fatal("no running upload replica left to stop")
	}

	since := time.Now()
	s.logf("docker stop upload replica %.12s", victim)
	s.must(commandTimeout, "docker", "stop", "--time", "30", victim)
	took := time.Since(since)
	state := s.must(commandTimeout, "docker", "inspect", "--format",
		"{{.State.ExitCode}} {{.State.OOMKilled}}", victim)
	s.logf("stopped in %v, exit code and OOM: %s", took.Round(time.Millisecond), state)
	if state != "0 false" {
		logs, _ := s.command(commandTimeout, "docker", "logs", "--tail", "20", victim)
		s.t.Errorf("upload replica after docker stop: exit code and OOM %q, want "+
			"\"0 false\" (a clean drain):\n%s", state, logs)
	}
	if took > 25*time.Second {
		s.t.Errorf("docker stop took %v, want well within the 30s grace period", took)
	}

	ref := s.ref("e2e/probe", "after-stop")
	probe := filepath.Join(s.dir, "probe", "probe")
	s.importImage(ref, probe, 0)
	s.push(ref)
	s.rmi(ref)
	s.pull(ref)
	if got := s.runImage(ref); got != probeLine {
		s.t.Errorf("docker run %s printed %q, want %q", ref, got, probeLine)
	}

	gw := s.containers("gateway")[0]
	logs := s.must(commandTimeout, "docker", "logs", "--since",
		since.UTC().Format(time.RFC3339Nano), gw)
	if n := strings.Count(logs, " status=5"); n > 0 {
		s.t.Errorf("after a graceful stop of one upload replica the gateway answered "+
			"%d request(s) with 5xx, want none:\n%s", n, grepLines(logs, " status=5"))
	}
	s.logf("after the graceful stop, push and pull went through with no 5xx")
	return ref
}

// freePort returns a TCP port free on 127.0.0.1 at the time of the call.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// randomHex returns n random bytes, hex encoded.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// lastLine returns the last line of s.
func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// grepLines returns the lines of s holding sub.
func grepLines(s, sub string) string {
	var b bytes.Buffer
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}
