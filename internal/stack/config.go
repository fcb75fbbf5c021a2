package stack

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/services/auth"
)

// Target is one concern a keel process can run.
type Target string

// The targets of KEEL_TARGET.
const (
	// TargetAll runs the gateway and every service in one process, talking
	// gRPC over loopback sockets, with the embedded S3 server unless an
	// endpoint is configured.
	TargetAll Target = "all"
	// TargetGateway runs the HTTP gateway.
	TargetGateway Target = "gateway"
	// TargetAuth runs the auth service.
	TargetAuth Target = "auth"
	// TargetUpload runs the upload service.
	TargetUpload Target = "upload"
	// TargetManifest runs the manifest service.
	TargetManifest Target = "manifest"
	// TargetS3 runs only the embedded S3 server, so that the processes of a
	// multi-process stack can share one local store.
	TargetS3 Target = "s3"
)

// targets lists every target in start order.
var targets = []Target{TargetS3, TargetAuth, TargetUpload, TargetManifest, TargetGateway}

// Defaults for the zero values of Config.
const (
	DefaultHTTPAddr      = ":5000"
	DefaultAuthAddr      = ":9001"
	DefaultUploadAddr    = ":9002"
	DefaultManifestAddr  = ":9003"
	DefaultS3Addr        = "127.0.0.1:9000"
	DefaultS3Region      = "auto"
	DefaultS3Bucket      = "keel"
	DefaultDataDir       = "./data"
	DefaultPartSize      = 16 << 20
	DefaultUploadMaxAge  = 24 * time.Hour
	DefaultAuthCacheTTL  = 5 * time.Second
	DefaultStopTimeout   = 10 * time.Second
	loopbackAnyPort      = "127.0.0.1:0"
	defaultLogFormatText = "text"
)

// Config is everything a keel process needs to know. The zero value runs
// every concern in one process on the embedded S3 server, with no users
// (so every request is refused).
type Config struct {
	// Targets are the concerns this process runs. Empty means TargetAll.
	Targets []Target

	// HTTPAddr is the gateway's listen address. "" means DefaultHTTPAddr.
	HTTPAddr string
	// AuthAddr, UploadAddr and ManifestAddr are the gRPC listen addresses
	// of the services this process runs. "" means "127.0.0.1:0" (a free
	// loopback port) when every concern runs here (TargetAll), else
	// DefaultAuthAddr, DefaultUploadAddr and DefaultManifestAddr.
	AuthAddr, UploadAddr, ManifestAddr string
	// AuthTarget, UploadTarget and ManifestTarget are the gRPC dial targets
	// (for example "dns:///upload:9002") of the services the gateway and
	// the manifest service call. "" means the service's listener in this
	// process, which must then run it.
	AuthTarget, UploadTarget, ManifestTarget string

	// S3Endpoint is the S3 API's base URL, e.g.
	// "https://<account-id>.r2.cloudflarestorage.com". "" means an embedded
	// S3 server in this process, keeping its data in DataDir.
	S3Endpoint string
	// S3Region is the signing region. "" means DefaultS3Region ("auto", as
	// R2 wants).
	S3Region string
	// S3Bucket is the bucket every byte lives in; it is created when
	// missing. "" means DefaultS3Bucket.
	S3Bucket string
	// S3AccessKeyID and S3SecretAccessKey sign requests. With an endpoint
	// they are required; for the embedded server "" means generated at
	// start (the TargetS3 process needs them set, since other processes
	// must know them).
	S3AccessKeyID, S3SecretAccessKey string
	// S3PathStyle selects path-style addressing. It is always on for the
	// embedded server; false means virtual-hosted style for an endpoint.
	S3PathStyle bool
	// S3Prefix is prepended to every object key. "" means none.
	S3Prefix string
	// DataDir is the embedded S3 server's folder. "" means DefaultDataDir.
	DataDir string
	// S3Addr is the embedded S3 server's listen address. "" means a free
	// loopback port when every concern runs here (TargetAll), else
	// DefaultS3Addr.
	S3Addr string

	// Users are the accounts of the auth service. None, with AnonymousPull
	// false, means every request is refused.
	Users []auth.User
	// AnonymousPull lets callers without credentials pull. False denies
	// them everything.
	AnonymousPull bool
	// AuthPolicy is the path of the permissions file (YAML or JSON, see
	// auth.Policy). "" means none: only the built-in rules of Users and
	// AnonymousPull.
	AuthPolicy string
	// AuthFailureLimit is how many failed logins one client address may
	// make per minute. 0 means auth.DefaultFailureLimit.
	AuthFailureLimit int
	// JWTPublicKey verifies JWT logins (tokens an operator signs, sent as
	// a basic-auth password). nil turns them off.
	JWTPublicKey crypto.PublicKey
	// JWTAlgorithm pins the algorithm of JWT logins. "" means the one
	// JWTPublicKey is for.
	JWTAlgorithm jwtkey.Algorithm
	// JWTIssuer and JWTAudience are the iss and aud every JWT login must
	// carry; both are required with JWTPublicKey.
	JWTIssuer, JWTAudience string
	// TokenAuth makes the gateway answer 401s with a Bearer challenge,
	// sending clients to its token endpoint (Docker's token flow). False
	// asks for basic auth; bearer tokens are accepted either way.
	TokenAuth bool
	// TokenRealm is the token endpoint's URL in Bearer challenges. "" means
	// the request's own scheme and host plus /token.
	TokenRealm string
	// TokenService names the registry in challenges and is the audience of
	// its tokens; gateway and auth service must agree. "" means "keel".
	TokenService string
	// TokenIssuer is the iss of registry tokens. "" means "keel".
	TokenIssuer string
	// TokenTTL is how long a registry token is valid. 0 means
	// auth.DefaultTokenTTL.
	TokenTTL time.Duration
	// TokenSigningKey signs registry tokens. nil means keys generated by
	// the auth service, kept in the object store and rotated every
	// TokenKeyRotation (or, for an auth process without storage, one key
	// generated in the process).
	TokenSigningKey crypto.Signer
	// TokenKeyRotation is how long each generated signing key signs. 0
	// means auth.DefaultKeyRotation.
	TokenKeyRotation time.Duration
	// TrustedProxies are the networks of reverse proxies whose forwarding
	// headers the gateway believes. None means they are ignored.
	TrustedProxies []netip.Prefix

	// PartSize is the multipart part size of new uploads. 0 means
	// DefaultPartSize.
	PartSize int64
	// UploadMaxAge is how long an idle upload session lives before it is
	// removed. 0 means DefaultUploadMaxAge.
	UploadMaxAge time.Duration

	// BlobRedirect answers blob GETs with a redirect to a presigned URL.
	// False streams blobs through the gateway.
	BlobRedirect bool
	// AuthCacheTTL is how long the gateway reuses an auth decision. 0 means
	// DefaultAuthCacheTTL.
	AuthCacheTTL time.Duration

	// StopTimeout bounds each step of the shutdown. 0 means
	// DefaultStopTimeout.
	StopTimeout time.Duration

	// MetricsAddr is where the process serves its Prometheus metrics, at
	// MetricsPath: one endpoint for everything the process runs. "" means
	// no metrics (and no listener).
	MetricsAddr string
	// PprofAddr is where the process serves Go's profiling endpoints, at
	// /debug/pprof/. "" means none (and no listener).
	PprofAddr string
	// HealthInterval is how often the upload and manifest services check
	// that their bucket answers; their gRPC health service reports
	// NOT_SERVING while it does not. 0 means DefaultHealthInterval.
	HealthInterval time.Duration
	// TracerProvider makes the process's spans. nil means the tracing the
	// standard OTEL_* environment variables ask for, which is off when they
	// name no exporter or endpoint (see telemetry.NewTracing). Run does not
	// shut a provider given here down.
	TracerProvider trace.TracerProvider

	// LogLevel is the least level logged; the zero value is slog.LevelInfo.
	// Run does not read it: the caller builds the logger (see NewLogger).
	LogLevel slog.Level
	// LogFormat is "text" or "json". "" means text.
	LogFormat string
}

// runs reports whether the process runs target t.
func (c Config) runs(t Target) bool {
	if c.allInOne() {
		return t != TargetS3 || c.S3Endpoint == ""
	}
	return slices.Contains(c.Targets, t)
}

// storesData reports whether the process runs a service that keeps data
// in the object store.
func (c Config) storesData() bool {
	return c.runs(TargetUpload) || c.runs(TargetManifest)
}

// embedsS3 reports whether the process runs the embedded S3 server: as its
// own target, or because a service here needs storage and no endpoint is
// configured.
func (c Config) embedsS3() bool {
	return c.runs(TargetS3) || (c.S3Endpoint == "" && c.storesData())
}

// allInOne reports whether every concern runs in this process.
func (c Config) allInOne() bool {
	return len(c.Targets) == 0 || slices.Contains(c.Targets, TargetAll)
}

// withDefaults returns c with every zero field that has a default set.
func (c Config) withDefaults() Config {
	local := c.allInOne()
	pick := func(v *string, def, localDef string) {
		if *v != "" {
			return
		}
		*v = def
		if local {
			*v = localDef
		}
	}
	pick(&c.HTTPAddr, DefaultHTTPAddr, DefaultHTTPAddr)
	pick(&c.AuthAddr, DefaultAuthAddr, loopbackAnyPort)
	pick(&c.UploadAddr, DefaultUploadAddr, loopbackAnyPort)
	pick(&c.ManifestAddr, DefaultManifestAddr, loopbackAnyPort)
	pick(&c.S3Region, DefaultS3Region, DefaultS3Region)
	pick(&c.S3Bucket, DefaultS3Bucket, DefaultS3Bucket)
	pick(&c.DataDir, DefaultDataDir, DefaultDataDir)
	pick(&c.S3Addr, DefaultS3Addr, loopbackAnyPort)
	pick(&c.LogFormat, defaultLogFormatText, defaultLogFormatText)
	if c.PartSize == 0 {
		c.PartSize = DefaultPartSize
	}
	if c.UploadMaxAge == 0 {
		c.UploadMaxAge = DefaultUploadMaxAge
	}
	if c.AuthCacheTTL == 0 {
		c.AuthCacheTTL = DefaultAuthCacheTTL
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if c.HealthInterval == 0 {
		c.HealthInterval = DefaultHealthInterval
	}
	return c
}

// validate reports a configuration Run cannot start with.
func (c Config) validate() error {
	for _, t := range c.Targets {
		if t != TargetAll && !slices.Contains(targets, t) {
			return fmt.Errorf("unknown target %q", t)
		}
	}
	needs := func(caller, callee Target, dial string) error {
		if c.runs(caller) && !c.runs(callee) && dial == "" {
			return fmt.Errorf("target %s needs the %s service: set KEEL_%s_TARGET",
				caller, callee, strings.ToUpper(string(callee)))
		}
		return nil
	}
	if err := errors.Join(
		needs(TargetGateway, TargetAuth, c.AuthTarget),
		needs(TargetGateway, TargetUpload, c.UploadTarget),
		needs(TargetGateway, TargetManifest, c.ManifestTarget),
		needs(TargetManifest, TargetUpload, c.UploadTarget),
	); err != nil {
		return err
	}
	if c.runs(TargetS3) && !c.allInOne() &&
		(c.S3AccessKeyID == "" || c.S3SecretAccessKey == "") {
		return errors.New("target s3 needs KEEL_S3_ACCESS_KEY_ID and " +
			"KEEL_S3_SECRET_ACCESS_KEY, which the other processes sign with")
	}
	if c.S3Endpoint != "" && c.storesData() &&
		(c.S3AccessKeyID == "" || c.S3SecretAccessKey == "") {
		return errors.New("KEEL_S3_ENDPOINT needs KEEL_S3_ACCESS_KEY_ID and " +
			"KEEL_S3_SECRET_ACCESS_KEY")
	}
	if c.PartSize < 0 {
		return fmt.Errorf("part size %d is negative", c.PartSize)
	}
	if c.UploadMaxAge < 0 || c.AuthCacheTTL < 0 || c.StopTimeout < 0 ||
		c.HealthInterval < 0 {
		return errors.New("durations must not be negative")
	}
	if err := c.validateAuth(); err != nil {
		return err
	}
	if c.LogFormat != "" && c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("log format %q is neither text nor json", c.LogFormat)
	}
	return nil
}

// NewLogger returns the logger c asks for (LogLevel, LogFormat), writing
// to w.
func NewLogger(w io.Writer, c Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// ConfigFromEnv reads a Config from KEEL_* environment variables through
// getenv (os.Getenv in production). An unset or empty variable leaves its
// field at the zero value; a malformed one is an error naming it.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var c Config
	r := envReader{getenv: getenv}

	c.Targets = r.targets("KEEL_TARGET")
	c.HTTPAddr = getenv("KEEL_HTTP_ADDR")
	c.AuthAddr = getenv("KEEL_AUTH_ADDR")
	c.UploadAddr = getenv("KEEL_UPLOAD_ADDR")
	c.ManifestAddr = getenv("KEEL_MANIFEST_ADDR")
	c.AuthTarget = getenv("KEEL_AUTH_TARGET")
	c.UploadTarget = getenv("KEEL_UPLOAD_TARGET")
	c.ManifestTarget = getenv("KEEL_MANIFEST_TARGET")

	c.S3Endpoint = getenv("KEEL_S3_ENDPOINT")
	c.S3Region = getenv("KEEL_S3_REGION")
	c.S3Bucket = getenv("KEEL_S3_BUCKET")
	c.S3AccessKeyID = getenv("KEEL_S3_ACCESS_KEY_ID")
	c.S3SecretAccessKey = getenv("KEEL_S3_SECRET_ACCESS_KEY")
	c.S3PathStyle = r.bool("KEEL_S3_PATH_STYLE")
	c.S3Prefix = getenv("KEEL_S3_PREFIX")
	c.DataDir = getenv("KEEL_DATA_DIR")
	c.S3Addr = getenv("KEEL_S3_ADDR")

	c.Users = r.users()
	c.AnonymousPull = r.bool("KEEL_ANONYMOUS_PULL")
	r.authSettings(&c)

	c.PartSize = r.size("KEEL_PART_SIZE")
	c.UploadMaxAge = r.duration("KEEL_UPLOAD_MAX_AGE")
	c.BlobRedirect = r.bool("KEEL_BLOB_REDIRECT")
	c.AuthCacheTTL = r.duration("KEEL_AUTH_CACHE_TTL")
	c.StopTimeout = r.duration("KEEL_STOP_TIMEOUT")
	c.MetricsAddr = getenv("KEEL_METRICS_ADDR")
	c.PprofAddr = getenv("KEEL_PPROF_ADDR")
	c.HealthInterval = r.duration("KEEL_HEALTH_INTERVAL")

	c.LogLevel = r.level("KEEL_LOG_LEVEL")
	c.LogFormat = strings.ToLower(getenv("KEEL_LOG_FORMAT"))

	if err := errors.Join(r.errs...); err != nil {
		return Config{}, err
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// envReader parses environment variables, collecting every error.
type envReader struct {
	getenv func(string) string
	errs   []error
}

func (r *envReader) fail(name, value string, err error) {
	r.errs = append(r.errs, fmt.Errorf("%s=%q: %w", name, value, err))
}

func (r *envReader) targets(name string) []Target {
	v := r.getenv(name)
	if v == "" {
		return nil
	}
	var out []Target
	for _, f := range strings.Split(v, ",") {
		t := Target(strings.ToLower(strings.TrimSpace(f)))
		if t != TargetAll && !slices.Contains(targets, t) {
			r.fail(name, v, fmt.Errorf("unknown target %q (want all, gateway, auth, "+
				"upload, manifest or s3)", t))
			continue
		}
		out = append(out, t)
	}
	return out
}

func (r *envReader) bool(name string) bool {
	v := r.getenv(name)
	if v == "" {
		return false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(name, v, errors.New("not a boolean"))
	}
	return b
}

func (r *envReader) duration(name string) time.Duration {
	v := r.getenv(name)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		r.fail(name, v, errors.New("not a duration such as 30s or 24h"))
	}
	return d
}

func (r *envReader) size(name string) int64 {
	v := r.getenv(name)
	if v == "" {
		return 0
	}
	n, err := ParseSize(v)
	if err != nil {
		r.fail(name, v, err)
	}
	return n
}

func (r *envReader) level(name string) slog.Level {
	v := r.getenv(name)
	var l slog.Level
	if v == "" {
		return l
	}
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.fail(name, v, errors.New("not a level (debug, info, warn, error)"))
	}
	return l
}

// users reads the read-write and the read-only account.
func (r *envReader) users() []auth.User {
	var out []auth.User
	for _, e := range []struct {
		name   string
		access auth.Access
	}{
		{"KEEL_USER", auth.ReadWrite},
		{"KEEL_READONLY_USER", auth.ReadOnly},
	} {
		v := r.getenv(e.name)
		if v == "" {
			continue
		}
		u, err := auth.ParseUser(v, e.access)
		if err != nil {
			// The value holds a password: name the variable, not its value.
			r.errs = append(r.errs, fmt.Errorf("%s: %w", e.name, err))
			continue
		}
		out = append(out, u)
	}
	return out
}

// sizeUnits are the suffixes ParseSize accepts, longest first.
var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"kib", 1 << 10},
	{"mib", 1 << 20},
	{"gib", 1 << 30},
	{"b", 1},
}

// ParseSize reads a byte count: plain bytes ("16777216") or a whole number
// of KiB, MiB or GiB ("16MiB"; the unit is case-insensitive).
func ParseSize(s string) (int64, error) {
	num := strings.TrimSpace(s)
	factor := int64(1)
	lower := strings.ToLower(num)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			num = strings.TrimSpace(num[:len(num)-len(u.suffix)])
			factor = u.factor
			break
		}
	}

	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q is not a byte count such as 16MiB or 16777216", s)
	}
	if n > (1<<63-1)/factor {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * factor, nil
}
