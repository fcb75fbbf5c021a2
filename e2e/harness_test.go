package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
	"github.com/keel-registry/keel/internal/transport"
)

// Timeouts of the harness.
const (
	readyTimeout = 60 * time.Second
	stopTimeout  = 30 * time.Second
	buildTimeout = 10 * time.Minute
)

// e2ePartSize is the upload part size of the stacks under test: the
// smallest S3 allows, so that layers of a few MiB span several parts.
const e2ePartSize = "5MiB"

var (
	// build is the keel binary, built once per test run.
	build struct {
		once sync.Once
		dir  string
		bin  string
		err  error
	}
	// shared is the multi-process stack most tests use, started once.
	shared struct {
		once  sync.Once
		stack *stack
		err   error
	}
)

func TestMain(m *testing.M) {
	code := m.Run()

	if shared.stack != nil {
		if err := shared.stack.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: the stack did not stop cleanly: %v\n%s",
				err, shared.stack.logs())
			if code == 0 {
				code = 1
			}
		}
	}
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

// keelBinary builds ./cmd/keel once and returns its path.
func keelBinary(t *testing.T) string {
	t.Helper()
	bin, err := buildKeel()
	if err != nil {
		t.Fatalf("build keel: %v", err)
	}
	return bin
}

// buildKeel builds ./cmd/keel on its first call; every call returns that
// build's result.
func buildKeel() (string, error) {
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "keel-e2e-bin-")
		if build.err != nil {
			return
		}
		root, err := filepath.Abs("..")
		if err != nil {
			build.err = err
			return
		}
		build.bin = filepath.Join(build.dir, "keel")
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", build.bin, "./cmd/keel")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/keel: %v\n%s", err, out)
		}
	})
	return build.bin, build.err
}

// repoRoot returns the repository's root folder.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatalf("repository root: %v", err)
	}
	return root
}

// sharedStack returns the multi-process stack, starting it on first use.
// When the calling test fails, the processes' logs are printed.
func sharedStack(t *testing.T) *stack {
	t.Helper()
	shared.once.Do(func() {
		bin, err := buildKeel()
		if err != nil {
			shared.err = fmt.Errorf("build keel: %w", err)
			return
		}
		shared.stack, shared.err = startStack(bin, stackEnv{})
	})
	if shared.err != nil {
		msg := ""
		if shared.stack != nil {
			msg = shared.stack.logs()
		}
		t.Fatalf("start the stack: %v\n%s", shared.err, msg)
	}
	s := shared.stack
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stack logs (last lines of each process):\n%s", s.logs())
		}
	})
	return s
}

// credentials is one registry account.
type credentials struct {
	user, pass string
}

// stack is a keel registry made of one process per concern.
type stack struct {
	// registry is the gateway's host:port.
	registry string
	// gateways are the host:port of every gateway, registry first.
	gateways []string
	// manifestGRPC is the manifest service's gRPC host:port.
	manifestGRPC string
	admin        credentials
	reader       credentials
	// procs are the processes in start order.
	procs []*process
	// work is the processes' working folder, with the S3 data.
	work string
}

// stackEnv adds KEEL_* variables to processes of a stack.
type stackEnv struct {
	auth, gateway []string
	// uploadReplicas is how many upload processes to run; 0 means one.
	// Their clients reach them through one static:/// target.
	uploadReplicas int
	// manifestReplicas and gateways are how many manifest and gateway
	// processes to run; 0 means one. Gateway i talks only to manifest
	// replica i (modulo their count), so that a test knows which replica
	// answers.
	manifestReplicas, gateways int
}

// startStack starts an embedded S3 process, then auth, upload, manifest
// and gateway processes that use it, each waited for until it is healthy.
// The auth service keeps its token signing keys in S3 too. On error the
// processes started so far are stopped, and the returned stack (when not
// nil) still holds their logs.
func startStack(bin string, extra stackEnv) (*stack, error) {
	work, err := os.MkdirTemp("", "keel-e2e-stack-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	s3Addr, authAddr, uploadAddr, manifestAddr, httpAddr :=
		ports[0], ports[1], ports[2], ports[3], ports[4]
	s := &stack{
		work:         work,
		registry:     httpAddr,
		manifestGRPC: manifestAddr,
		admin:        credentials{"admin", randomHex(12)},
		reader:       credentials{"reader", randomHex(12)},
	}

	storage := []string{
		"KEEL_S3_ACCESS_KEY_ID=e2e" + randomHex(6),
		"KEEL_S3_SECRET_ACCESS_KEY=" + randomHex(20),
		"KEEL_S3_REGION=auto",
		"KEEL_S3_BUCKET=keel-e2e",
		"KEEL_S3_PATH_STYLE=true",
		"KEEL_LOG_LEVEL=debug",
	}
	useS3 := append([]string{"KEEL_S3_ENDPOINT=http://" + s3Addr}, storage...)
	uploadAddrs, err := morePorts(uploadAddr, extra.uploadReplicas)
	if err != nil {
		return nil, err
	}
	manifestAddrs, err := morePorts(manifestAddr, extra.manifestReplicas)
	if err != nil {
		return nil, err
	}
	s.gateways, err = morePorts(httpAddr, extra.gateways)
	if err != nil {
		return nil, err
	}
	uploadTarget := uploadAddr
	if len(uploadAddrs) > 1 {
		uploadTarget = "static:///" + strings.Join(uploadAddrs, ",")
	}
	type step struct {
		name  string
		env   []string
		ready func(p *process) error
	}
	steps := []step{
		{"s3", append([]string{"KEEL_S3_ADDR=" + s3Addr,
			"KEEL_DATA_DIR=" + filepath.Join(work, "s3")}, storage...),
			func(p *process) error { return waitTCP(p, s3Addr) }},
		{"auth", slices.Concat([]string{"KEEL_AUTH_ADDR=" + authAddr,
			"KEEL_USER=" + s.admin.user + ":" + s.admin.pass,
			"KEEL_READONLY_USER=" + s.reader.user + ":" + s.reader.pass}, useS3, extra.auth),
			func(p *process) error { return waitGRPC(p, authAddr) }},
	}
	for i, addr := range uploadAddrs {
		steps = append(steps, step{replicaName("upload", i), append([]string{"KEEL_UPLOAD_ADDR=" + addr,
			"KEEL_PART_SIZE=" + e2ePartSize}, useS3...),
			func(p *process) error { return waitGRPC(p, addr) }})
	}
	for i, addr := range manifestAddrs {
		steps = append(steps, step{replicaName("manifest", i),
			append([]string{"KEEL_MANIFEST_ADDR=" + addr,
				"KEEL_UPLOAD_TARGET=" + uploadTarget}, useS3...),
			func(p *process) error { return waitGRPC(p, addr) }})
	}
	for i, addr := range s.gateways {
		steps = append(steps, step{replicaName("gateway", i),
			append([]string{"KEEL_HTTP_ADDR=" + addr,
				"KEEL_AUTH_TARGET=" + authAddr,
				"KEEL_UPLOAD_TARGET=" + uploadTarget,
				"KEEL_MANIFEST_TARGET=" + manifestAddrs[i%len(manifestAddrs)]},
				extra.gateway...),
			func(p *process) error { return waitGateway(p, addr) }})
	}
	for _, st := range steps {
		target, _, _ := strings.Cut(st.name, "#")
		env := append([]string{"KEEL_TARGET=" + target}, st.env...)
		p, err := startProcess(bin, st.name, work, env)
		if err != nil {
			s.stop()
			return s, err
		}
		s.procs = append(s.procs, p)
		if err := st.ready(p); err != nil {
			s.stop()
			return s, fmt.Errorf("%s process not ready: %w", st.name, err)
		}
	}
	return s, nil
}

// morePorts returns first and, for n above one, n-1 more free ports.
func morePorts(first string, n int) ([]string, error) {
	if n <= 1 {
		return []string{first}, nil
	}
	more, err := freePorts(n - 1)
	return append([]string{first}, more...), err
}

// replicaName names the i-th process of a target: "manifest",
// "manifest#2", ...
func replicaName(target string, i int) string {
	if i == 0 {
		return target
	}
	return fmt.Sprintf("%s#%d", target, i+1)
}

// url returns the gateway URL of path.
func (s *stack) url(path string) string { return "http://" + s.registry + path }

// stop stops the processes in reverse start order. Each must exit with
// status 0 on SIGTERM within stopTimeout.
func (s *stack) stop() error {
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		os.RemoveAll(s.work)
	}
	return errors.Join(errs...)
}

// logs returns, for each process, the warnings, errors and 5xx answers it
// logged, then the last lines it wrote.
func (s *stack) logs() string {
	var b strings.Builder
	for _, p := range s.procs {
		fmt.Fprintf(&b, "----- %s (pid %d): warnings, errors, 5xx -----\n%s\n",
			p.name, p.pid(), p.logs.problems(100))
		fmt.Fprintf(&b, "----- %s (pid %d): last lines -----\n%s\n",
			p.name, p.pid(), p.logs.tail(150))
	}
	return b.String()
}

// process is one keel process of a stack.
type process struct {
	name    string
	cmd     *exec.Cmd
	logs    *logBuffer
	exited  chan struct{}
	waitErr error
}

// startProcess starts bin in dir with the KEEL_* variables env and the
// test's environment less its own KEEL_* variables.
func startProcess(bin, name, dir string, env []string) (*process, error) {
	cmd := exec.Command(bin)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	p := &process{name: name, cmd: cmd, logs: &logBuffer{}, exited: make(chan struct{})}
	cmd.Stdout = p.logs
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s process: %w", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// alive returns an error if the process has exited.
func (p *process) alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("%s process exited: %v", p.name, p.waitErr)
	default:
		return nil
	}
}

// stop sends SIGTERM to the process (by its pid) and waits for it to exit;
// after stopTimeout it is killed. Anything but exit status 0 is an error.
func (p *process) stop() error {
	if err := p.alive(); err != nil {
		return fmt.Errorf("%w before it was stopped", err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal %s process: %w", p.name, err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return fmt.Errorf("%s process after SIGTERM: %w", p.name, p.waitErr)
		}
		return nil
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%s process did not exit within %v of SIGTERM; killed",
			p.name, stopTimeout)
	}
}

// waitFor calls check until it succeeds, the process exits or
// readyTimeout passes.
func waitFor(p *process, what string, check func(ctx context.Context) error) error {
	deadline := time.Now().Add(readyTimeout)
	var last error
	for time.Now().Before(deadline) {
		if err := p.alive(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		last = check(ctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v: %v", what, readyTimeout, last)
}

// waitTCP waits until addr accepts connections.
func waitTCP(p *process, addr string) error {
	return waitFor(p, addr, func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// waitGRPC waits until the gRPC health service at addr reports SERVING.
func waitGRPC(p *process, addr string) error {
	conn, err := transport.Dial(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	return waitFor(p, "gRPC health of "+addr, func(ctx context.Context) error {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health status %v", resp.GetStatus())
		}
		return nil
	})
}

// waitGateway waits until an anonymous GET /v2/ is refused with 401, which
// takes the gateway and the auth service behind it.
func waitGateway(p *process, addr string) error {
	return waitFor(p, "GET /v2/ at "+addr, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/v2/", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("anonymous GET /v2/ = %d, want 401", resp.StatusCode)
		}
		return nil
	})
}

// freePorts returns n loopback addresses whose ports were free a moment
// ago.
func freePorts(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	return out, nil
}

// randomHex returns n random bytes, hex encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// logBuffer collects a process's output.
type logBuffer struct{ telemetrytest.LogBuffer }

// problems returns up to n lines that log a warning, an error or a 5xx
// answer.
func (b *logBuffer) problems(n int) string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") ||
			strings.Contains(line, "status=5") {
			out = append(out, line)
		}
	}
	if len(out) > n {
		out = append(out[:n], fmt.Sprintf("[%d more]", len(out)-n))
	}
	return strings.Join(out, "\n")
}

// tail returns the last n lines written.
func (b *logBuffer) tail(n int) string { return tail(b.String(), n) }

// tail returns the last n lines of s, after a note of how many it left out.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[%d earlier lines]", len(lines)-n)},
			lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
