// Package s3embed runs a real S3 API server (versitygw over its posix
// backend) inside the current process, listening on a local TCP port. The
// all-in-one keel binary uses it to keep blobs on local disk behind the same
// S3 boundary as production, and tests use it (through s3test) to exercise
// objstore over real sockets.
//
// This package pulls in versitygw and its large dependency tree; only the
// all-in-one binary and test helpers should import it.
//
// Limits of the embedded gateway, all enforced or handled here:
//
//   - One server per process at a time. versitygw keeps package-level state,
//     and its posix backend resolves every path relative to the process's
//     working directory. A second Start while one server runs fails with
//     ErrAlreadyRunning; after Close, Start may be called again.
//   - Start changes the process's working directory to the data folder
//     (versitygw's posix backend calls os.Chdir and then uses relative
//     paths). Resolve relative paths before Start, and do not change the
//     working directory (os.Chdir, testing.T.Chdir) while the server runs:
//     that silently breaks every request. Close restores the directory that
//     was current when Start was called.
//   - Object metadata (ETags, content types, ...) lives in extended
//     attributes. When the data folder's filesystem cannot store user xattrs,
//     Start falls back to versitygw's sidecar metadata files.
//   - CopyObject and UploadPartCopy are enabled up to the S3 limit of 5 GiB;
//     versitygw's own default of zero would reject every copy.
package s3embed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pkg/xattr"
	"github.com/versity/versitygw/auth"
	"github.com/versity/versitygw/backend/meta"
	"github.com/versity/versitygw/backend/posix"
	"github.com/versity/versitygw/debuglogger"
	"github.com/versity/versitygw/embedgw"
	"github.com/versity/versitygw/s3api"
)

// Options configures Start.
type Options struct {
	// Dir is the data folder. Buckets live in Dir/buckets and, when the
	// filesystem lacks extended attributes, metadata in Dir/meta. It is
	// created if missing. "" means a fresh temporary folder that Close
	// removes.
	Dir string
	// Addr is the TCP listen address. "" means "127.0.0.1:0"; port 0 picks
	// a free port.
	Addr string
	// AccessKey is the root account's access key. "" means generated.
	AccessKey string
	// SecretKey is the root account's secret key. "" means generated.
	SecretKey string
	// Region is the region the server expects in signatures. "" means
	// "us-east-1".
	Region string
	// Sidecar forces sidecar metadata files (Dir/meta) even when the
	// filesystem supports extended attributes. The choice must stay the
	// same for the life of a data folder.
	Sidecar bool
	// Verbose lets versitygw print its banner and one line per request to
	// stdout. By default it is silent.
	Verbose bool
}

// ErrAlreadyRunning is returned by Start while another embedded server is
// running in this process.
var ErrAlreadyRunning = errors.New(
	"s3embed: an embedded S3 server is already running in this process " +
		"(versitygw allows one per process; share it or Close it first)")

// running guards the one-server-per-process rule.
var (
	runningMu sync.Mutex
	running   bool
)

// copyThreshold is the largest source object CopyObject and UploadPartCopy
// accept: the S3 limit of 5 GiB.
const copyThreshold = 5 << 30

// Server is a running embedded S3 server.
type Server struct {
	endpoint  string
	accessKey string
	secretKey string
	region    string
	dir       string
	sidecar   bool

	removeDir string // temporary data folder to delete on Close
	prevWD    string // working directory to restore on Close

	cancel    context.CancelFunc
	done      chan error
	closeOnce sync.Once
	closeErr  error
}

// Start starts an embedded S3 server and returns once its listener accepts
// connections. ctx bounds only the start-up; the server runs until Close.
func Start(ctx context.Context, opts Options) (*Server, error) {
	runningMu.Lock()
	defer runningMu.Unlock()
	if running {
		return nil, ErrAlreadyRunning
	}
	s, err := start(ctx, opts)
	if err != nil {
		return nil, err
	}
	running = true
	return s, nil
}

// start does the work of Start with runningMu held.
func start(ctx context.Context, opts Options) (*Server, error) {
	var err error
	s := &Server{
		accessKey: opts.AccessKey,
		secretKey: opts.SecretKey,
		region:    opts.Region,
	}
	if s.accessKey == "" {
		s.accessKey = "keel" + randomHex(8)
	}
	if s.secretKey == "" {
		s.secretKey = randomHex(20)
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	if s.prevWD, err = os.Getwd(); err != nil {
		return nil, fmt.Errorf("s3embed: get working directory: %w", err)
	}
	started := false
	defer func() {
		if !started {
			s.cleanupFiles()
		}
	}()

	if opts.Dir == "" {
		if s.dir, err = os.MkdirTemp("", "keel-s3embed-"); err != nil {
			return nil, fmt.Errorf("s3embed: create data folder: %w", err)
		}
		s.removeDir = s.dir
	} else if s.dir, err = filepath.Abs(opts.Dir); err != nil {
		return nil, fmt.Errorf("s3embed: data folder %q: %w", opts.Dir, err)
	}
	root := filepath.Join(s.dir, "buckets")
	if err = os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("s3embed: create data folder: %w", err)
	}

	popts := posix.PosixOpts{
		CopyObjectThreshold: copyThreshold,
		Concurrency:         5000,
	}
	popts.SetNewDirPerm(0o755)
	popts.SetNewFilePerm(0o644)

	var ms meta.MetadataStorer = meta.XattrMeta{}
	s.sidecar = opts.Sidecar
	if !s.sidecar {
		if xerr := probeXattr(root); xerr != nil {
			s.sidecar = true
		}
	}
	if s.sidecar {
		metaDir := filepath.Join(s.dir, "meta")
		if err = os.MkdirAll(metaDir, 0o755); err != nil {
			return nil, fmt.Errorf("s3embed: create metadata folder: %w", err)
		}
		sc, scErr := meta.NewSideCar(metaDir)
		if scErr != nil {
			return nil, fmt.Errorf("s3embed: sidecar metadata: %w", scErr)
		}
		// popts.SideCarDir is left empty on purpose: posix.New uses it only
		// to check that the folder is outside root (true by construction)
		// and to print a line on stdout.
		ms = sc
	}

	// posix.New changes the process's working directory to root.
	be, err := posix.New(root, ms, popts)
	if err != nil {
		return nil, fmt.Errorf("s3embed: posix backend: %w", err)
	}

	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		be.Shutdown()
		return nil, fmt.Errorf("s3embed: listen address %q: %w", addr, err)
	}
	// versitygw binds by address string and does not report the port it
	// got, so port 0 is resolved here: pick a free port, and retry with
	// another if someone else takes it before versitygw binds.
	pick := port == "0" || port == ""
	for attempt := 0; ; attempt++ {
		if pick {
			if port, err = freePort(host); err != nil {
				be.Shutdown()
				return nil, err
			}
		}
		hostPort := net.JoinHostPort(host, port)
		err = s.run(ctx, be, hostPort, opts.Verbose)
		if err == nil {
			s.endpoint = "http://" + net.JoinHostPort(dialHost(host), port)
			started = true
			return s, nil
		}
		if !pick || attempt >= 4 || !strings.Contains(err.Error(), "bind") {
			// RunVersityGW has already shut the backend down.
			return nil, err
		}
		// RunVersityGW shut the backend down; build a fresh one.
		if be, err = posix.New(root, ms, popts); err != nil {
			return nil, fmt.Errorf("s3embed: posix backend: %w", err)
		}
	}
}

// run starts the gateway on hostPort and waits until it listens.
func (s *Server) run(
	ctx context.Context, be *posix.Posix, hostPort string, verbose bool,
) error {
	ready := make(chan struct{})
	var readyOnce sync.Once
	cfg := &embedgw.Config{
		RootUserAccess:    s.accessKey,
		RootUserSecret:    s.secretKey,
		Region:            s.region,
		Ports:             []string{hostPort},
		MaxConnections:    10000,
		MaxRequests:       5000,
		MultipartMaxParts: 10000,
		KeepAlive:         true,
		Quiet:             !verbose,
		LogLevel:          debuglogger.LevelSilent,
		// Single-account IAM, built here because auth.New would announce
		// it on stdout.
		IAMService: auth.NewIAMServiceSingle(auth.Account{
			Access: s.accessKey,
			Secret: s.secretKey,
			Role:   auth.RoleAdmin,
		}),
		S3Options: []s3api.Option{
			s3api.WithOnListen(func() { readyOnce.Do(func() { close(ready) }) }),
		},
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- embedgw.RunVersityGW(runCtx, be, cfg) }()

	fail := func(err error) error {
		cancel()
		<-done
		return err
	}
	select {
	case <-ready:
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("stopped before listening")
		}
		return fmt.Errorf("s3embed: start gateway on %s: %w", hostPort, err)
	case <-ctx.Done():
		return fail(fmt.Errorf("s3embed: start gateway: %w", ctx.Err()))
	}
	// OnListen fires just before serving; confirm a connection goes
	// through so that callers can send requests at once.
	d := net.Dialer{Timeout: time.Second}
	for {
		conn, err := d.DialContext(ctx, "tcp", dialAddr(hostPort))
		if err == nil {
			conn.Close()
			break
		}
		if ctx.Err() != nil {
			return fail(fmt.Errorf("s3embed: start gateway: %w", ctx.Err()))
		}
		select {
		case err := <-done:
			cancel()
			return fmt.Errorf("s3embed: gateway on %s stopped: %v", hostPort, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	s.cancel = cancel
	s.done = done
	return nil
}

// dialAddr maps a listen address to the address to dial.
func dialAddr(hostPort string) string {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return hostPort
	}
	return net.JoinHostPort(dialHost(host), port)
}

// dialHost returns the host clients should dial for a listen host: the
// loopback address when the server listens on every interface.
func dialHost(host string) string {
	if host == "" {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if ip.To4() != nil {
			return "127.0.0.1"
		}
		return "::1"
	}
	return host
}

// freePort asks the kernel for a free TCP port on host.
func freePort(host string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("s3embed: find a free port: %w", err)
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// probeXattr reports whether dir's filesystem stores user extended
// attributes, by writing and reading one on a scratch file.
func probeXattr(dir string) error {
	if !xattr.XATTR_SUPPORTED {
		return errors.New("xattrs are not supported on this platform")
	}
	f, err := os.CreateTemp(dir, ".keel-xattr-probe-")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	want := []byte("ok")
	if err := xattr.Set(name, "user.keel.probe", want); err != nil {
		return err
	}
	got, err := xattr.Get(name, "user.keel.probe")
	if err != nil {
		return err
	}
	if string(got) != string(want) {
		return errors.New("xattr read back differs")
	}
	return nil
}

// randomHex returns n random bytes, hex encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return hex.EncodeToString(b)
}

// Endpoint returns the server's base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) Endpoint() string { return s.endpoint }

// AccessKey returns the root account's access key.
func (s *Server) AccessKey() string { return s.accessKey }

// SecretKey returns the root account's secret key.
func (s *Server) SecretKey() string { return s.secretKey }

// Region returns the region the server expects in request signatures.
func (s *Server) Region() string { return s.region }

// Dir returns the absolute path of the data folder.
func (s *Server) Dir() string { return s.dir }

// Sidecar reports whether metadata is kept in sidecar files rather than
// extended attributes.
func (s *Server) Sidecar() bool { return s.sidecar }

// Close stops the server, waits for in-flight requests, restores the working
// directory Start found, and removes the data folder if Start created it. It
// is safe to call twice.
//
// Close normally takes about 100 ms, but it waits up to versitygw's 10 s
// shutdown limit while any client holds a connection that has not yet
// carried a request. Go's http.Transport leaves such spare connections in
// its idle pool after parallel requests; closing the clients' idle
// connections (Transport.CloseIdleConnections) before Close avoids the wait.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		if err := <-s.done; err != nil && !errors.Is(err, context.Canceled) {
			s.closeErr = fmt.Errorf("s3embed: gateway: %w", err)
		}
		s.cleanupFiles()
		runningMu.Lock()
		running = false
		runningMu.Unlock()
	})
	return s.closeErr
}

// cleanupFiles restores the working directory and removes a temporary
// data folder.
func (s *Server) cleanupFiles() {
	if s.prevWD != "" {
		if err := os.Chdir(s.prevWD); err != nil && s.closeErr == nil {
			s.closeErr = fmt.Errorf("s3embed: restore working directory: %w", err)
		}
	}
	if s.removeDir != "" {
		if err := os.RemoveAll(s.removeDir); err != nil && !errors.Is(err, fs.ErrNotExist) &&
			s.closeErr == nil {
			s.closeErr = fmt.Errorf("s3embed: remove data folder: %w", err)
		}
	}
}
