// Package s3test gives tests a real S3 bucket: one embedded versitygw
// server per test process (see s3embed), and a fresh bucket per call.
//
// Because the embedded server changes the process's working directory (see
// s3embed), tests that open relative paths such as "testdata/x" must do so
// before their first call to Start, or use paths made absolute beforehand;
// and no test in the process may change the working directory afterwards
// (t.Chdir, os.Chdir).
package s3test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed"
)

// dirPrefix names this package's data folders in os.TempDir; the owning
// process's id follows it.
const dirPrefix = "keel-s3test-"

var (
	once     sync.Once
	server   *s3embed.Server
	startErr error
	dataDir  string
	buckets  atomic.Int64
)

// Start returns a Config for a new, empty bucket on the process's shared
// embedded S3 server, starting the server on first use. The bucket's name is
// unique within the process; it is not deleted when the test ends (the data
// folder is, by Main or by the next test process that finds it abandoned).
func Start(t testing.TB) objstore.Config {
	t.Helper()
	srv, err := shared()
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	cfg := objstore.Config{
		Endpoint:        srv.Endpoint(),
		Region:          srv.Region(),
		Bucket:          bucketName(t.Name(), buckets.Add(1)),
		AccessKeyID:     srv.AccessKey(),
		SecretAccessKey: srv.SecretKey(),
		PathStyle:       true,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	if err := st.EnsureBucket(ctx); err != nil {
		t.Fatalf("s3test: create bucket %s: %v", cfg.Bucket, err)
	}
	return cfg
}

// Server returns the process's shared embedded server, starting it if
// needed. Tests that need a raw endpoint (for example to put a proxy in
// front of it) use this; most tests want Start.
func Server(t testing.TB) *s3embed.Server {
	t.Helper()
	srv, err := shared()
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	return srv
}

// Main runs a package's tests and then deletes the shared server's data
// folder. Use it from TestMain when that cleanup matters:
//
//	func TestMain(m *testing.M) { s3test.Main(m) }
//
// Without it the folder stays in os.TempDir until a later test process that
// uses this package removes it.
//
// Main does not shut the server down gracefully: the process is about to
// exit, and a graceful shutdown can take versitygw's full 10 s limit when a
// client holds a connection that never carried a request (Go's transport
// leaves such spare connections behind after parallel requests).
func Main(m *testing.M) {
	code := m.Run()
	if dataDir != "" {
		if err := os.RemoveAll(dataDir); err != nil {
			fmt.Fprintf(os.Stderr, "s3test: remove %s: %v\n", dataDir, err)
		}
	}
	os.Exit(code)
}

// shared starts the process's server once.
func shared() (*s3embed.Server, error) {
	once.Do(func() {
		removeAbandoned()
		dataDir, startErr = os.MkdirTemp("", dirPrefix+strconv.Itoa(os.Getpid())+"-")
		if startErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		server, startErr = s3embed.Start(ctx, s3embed.Options{Dir: dataDir})
		if startErr != nil {
			os.RemoveAll(dataDir)
		}
	})
	return server, startErr
}

// removeAbandoned deletes data folders left by earlier test processes that
// no longer run.
func removeAbandoned() {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, m := range matches {
		rest := strings.TrimPrefix(filepath.Base(m), dirPrefix)
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
			os.RemoveAll(m)
		}
	}
}

// bucketName derives a valid, unique S3 bucket name (3-63 characters of
// a-z, 0-9 and '-') from a test name and a sequence number.
func bucketName(testName string, seq int64) string {
	suffix := "-" + strconv.FormatInt(seq, 10)
	var b strings.Builder
	b.WriteString("t-")
	dash := true
	for _, r := range strings.ToLower(testName) {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		switch {
		case ok:
			b.WriteRune(r)
			dash = false
		case !dash:
			b.WriteByte('-')
			dash = true
		}
	}
	name := strings.TrimRight(b.String(), "-")
	if maxLen := 63 - len(suffix); len(name) > maxLen {
		name = strings.TrimRight(name[:maxLen], "-")
	}
	return name + suffix
}
