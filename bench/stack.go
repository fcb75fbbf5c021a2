package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/keel-registry/keel/internal/objstore"
)

// Stacks are the registries a benchmark compares, all on one S3 server.
type Stacks struct {
	// Keel is keel with each concern in its own process.
	Keel Target
	// Distribution is CNCF Distribution on the same S3 server.
	Distribution Target

	procs []*exec.Cmd
	work  string
}

// StackOptions says what to start.
type StackOptions struct {
	// Keel is the path of the keel binary.
	Keel string
	// Registry is the path of CNCF Distribution's registry binary.
	Registry string
	// PartSize is keel's upload part size ("16MiB"); Distribution's S3
	// chunk size is set to the same.
	PartSize string
	// PartBytes is PartSize in bytes.
	PartBytes int64
	// Log receives the processes' output.
	Log *os.File
	// Pprof turns on the profiling endpoints of every keel process and
	// Distribution's debug server, each on its own loopback port, and
	// prints their addresses to Progress.
	Pprof bool
	// Progress receives progress lines; nil means none.
	Progress io.Writer
}

const (
	benchUser = "bench"
	bucketS3  = "keel"
	bucketDis = "distribution"
)

// StartStacks starts the S3 server (keel's embedded versitygw in its own
// process), keel's auth, upload, manifest and gateway processes, and CNCF
// Distribution, every one on 127.0.0.1, with auth on in both registries.
func StartStacks(ctx context.Context, o StackOptions) (*Stacks, error) {
	work, err := os.MkdirTemp("", "keel-bench-")
	if err != nil {
		return nil, err
	}
	s := &Stacks{work: work}
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	s3, auth, upload, manifest, gateway, dist := ports[0], ports[1], ports[2], ports[3],
		ports[4], ports[5]
	pass := fmt.Sprintf("p%d", time.Now().UnixNano())
	key, secret := "bench", fmt.Sprintf("s%d", time.Now().UnixNano())

	storage := []string{"KEEL_S3_ACCESS_KEY_ID=" + key, "KEEL_S3_SECRET_ACCESS_KEY=" + secret,
		"KEEL_S3_REGION=us-east-1", "KEEL_S3_BUCKET=" + bucketS3, "KEEL_S3_PATH_STYLE=true",
		"KEEL_LOG_LEVEL=warn"}
	useS3 := append([]string{"KEEL_S3_ENDPOINT=http://" + s3}, storage...)
	steps := []struct {
		name string
		env  []string
		addr string
	}{
		{"s3", append([]string{"KEEL_S3_ADDR=" + s3,
			"KEEL_DATA_DIR=" + filepath.Join(work, "s3")}, storage...), s3},
		{"auth", append([]string{"KEEL_AUTH_ADDR=" + auth,
			"KEEL_USER=" + benchUser + ":" + pass}, useS3...), auth},
		{"upload", append([]string{"KEEL_UPLOAD_ADDR=" + upload,
			"KEEL_PART_SIZE=" + o.PartSize}, useS3...), upload},
		{"manifest", append([]string{"KEEL_MANIFEST_ADDR=" + manifest,
			"KEEL_UPLOAD_TARGET=" + upload}, useS3...), manifest},
		{"gateway", []string{"KEEL_HTTP_ADDR=" + gateway, "KEEL_AUTH_TARGET=" + auth,
			"KEEL_UPLOAD_TARGET=" + upload, "KEEL_MANIFEST_TARGET=" + manifest,
			"KEEL_LOG_LEVEL=warn"}, gateway},
	}
	keelProcs := []Proc{}
	debug := make([]string, len(steps)+1)
	if o.Pprof {
		if debug, err = freePorts(len(steps) + 1); err != nil {
			return nil, err
		}
		for i := range steps {
			steps[i].env = append(steps[i].env, "KEEL_PPROF_ADDR="+debug[i])
			progress(o, "pprof of keel's %s: http://%s/debug/pprof/", steps[i].name, debug[i])
		}
		progress(o, "pprof of distribution: http://%s/debug/pprof/", debug[len(steps)])
	}
	for _, st := range steps {
		cmd, err := s.start(o.Log, st.name, o.Keel, nil,
			append([]string{"KEEL_TARGET=" + st.name}, st.env...))
		if err != nil {
			s.Stop()
			return nil, err
		}
		if err := waitTCP(ctx, st.addr); err != nil {
			s.Stop()
			return nil, fmt.Errorf("%s: %w", st.name, err)
		}
		keelProcs = append(keelProcs, Proc{Name: st.name, PID: cmd.Process.Pid})
		if st.name == "s3" {
			if err := makeBucket(ctx, "http://"+s3, key, secret); err != nil {
				s.Stop()
				return nil, err
			}
		}
	}
	s.Keel = Target{Name: "keel", Host: gateway, Username: benchUser, Password: pass,
		Procs: keelProcs}

	cfg, err := s.distributionConfig(s3, dist, debug[len(steps)], key, secret, pass,
		o.PartBytes)
	if err != nil {
		s.Stop()
		return nil, err
	}
	cmd, err := s.start(o.Log, "distribution", o.Registry, []string{"serve", cfg},
		[]string{"OTEL_TRACES_EXPORTER=none"})
	if err != nil {
		s.Stop()
		return nil, err
	}
	if err := waitTCP(ctx, dist); err != nil {
		s.Stop()
		return nil, fmt.Errorf("distribution: %w", err)
	}
	s.Distribution = Target{Name: "distribution", Host: dist, Username: benchUser,
		Password: pass, Procs: []Proc{keelProcs[0], {Name: "registry", PID: cmd.Process.Pid}}}

	for _, t := range []Target{s.Keel, s.Distribution} {
		if err := waitAuthorized(ctx, t); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// distributionConfig writes Distribution's configuration: the same S3
// server in its own bucket, an S3 chunk size equal to keel's part size,
// and htpasswd auth with the bench login (bcrypt at its lowest cost, so
// that checking the password on every request costs little). A debug
// address other than "" turns on its debug server (with pprof) there.
func (s *Stacks) distributionConfig(
	s3, addr, debug, key, secret, pass string, chunk int64,
) (string, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		return "", err
	}
	htpasswd := filepath.Join(s.work, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(benchUser+":"+string(hash)+"\n"), 0o600); err != nil {
		return "", err
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: %s
    secretkey: %s
    region: us-east-1
    regionendpoint: http://%s
    forcepathstyle: true
    secure: false
    bucket: %s
    chunksize: %d
  delete:
    enabled: true
  redirect:
    disable: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
  secret: bench
auth:
  htpasswd:
    realm: bench
    path: %s
`, key, secret, s3, bucketDis, chunk, addr, htpasswd)
	if debug != "" {
		cfg = strings.Replace(cfg, "  secret: bench\n",
			"  secret: bench\n  debug:\n    addr: "+debug+"\n    prometheus:\n      enabled: false\n", 1)
	}
	path := filepath.Join(s.work, "distribution.yml")
	return path, os.WriteFile(path, []byte(cfg), 0o600)
}

// progress prints one progress line, if o has somewhere to print it.
func progress(o StackOptions, format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// start runs one process with the environment less any KEEL_* variables,
// plus env.
func (s *Stacks) start(log *os.File, name, bin string, args, env []string) (*exec.Cmd, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = s.work
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") && !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.procs = append(s.procs, cmd)
	return cmd, nil
}

// Stop stops every process, newest first, and removes the data.
func (s *Stacks) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		p := s.procs[i]
		p.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { p.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			p.Process.Kill()
			<-done
		}
	}
	os.RemoveAll(s.work)
}

func makeBucket(ctx context.Context, endpoint, key, secret string) error {
	st, err := objstore.New(ctx, objstore.Config{Endpoint: endpoint, Region: "us-east-1",
		Bucket: bucketDis, AccessKeyID: key, SecretAccessKey: secret, PathStyle: true})
	if err != nil {
		return err
	}
	return st.EnsureBucket(ctx)
}

func waitTCP(ctx context.Context, addr string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitAuthorized waits until the registry answers an authenticated GET /v2/.
func waitAuthorized(ctx context.Context, t Target) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", t.URL("/v2/"), nil)
		req.SetBasicAuth(t.Username, t.Password)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: GET /v2/ not answered 200: %w", t.Name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func freePorts(n int) ([]string, error) {
	var out []string
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// Machine describes the host for the report.
func Machine() string {
	var b bytes.Buffer
	cpu := "unknown CPU"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if info, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.TrimSpace(strings.SplitN(string(info), "\n", 2)[0])
	}
	fmt.Fprintf(&b, "%s, %d cores visible, %s", cpu, numCPU(), mem)
	return b.String()
}

func numCPU() int { return runtime.NumCPU() }
