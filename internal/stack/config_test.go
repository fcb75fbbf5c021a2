package stack

import (
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keel-registry/keel/services/auth"
)

// env returns a getenv over m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigFromEnvEmptyIsZero(t *testing.T) {
	cfg, err := ConfigFromEnv(env(nil))
	if err != nil {
		t.Fatalf("ConfigFromEnv(empty) = %v", err)
	}
	if !reflect.DeepEqual(cfg, Config{}) {
		t.Errorf("ConfigFromEnv(empty) = %+v, want the zero Config", cfg)
	}

	d := cfg.withDefaults()
	want := map[string]string{
		"HTTPAddr":     ":5000",
		"AuthAddr":     "127.0.0.1:0",
		"UploadAddr":   "127.0.0.1:0",
		"ManifestAddr": "127.0.0.1:0",
		"S3Addr":       "127.0.0.1:0",
		"S3Region":     "auto",
		"S3Bucket":     "keel",
		"DataDir":      "./data",
		"LogFormat":    "text",
	}
	got := map[string]string{
		"HTTPAddr": d.HTTPAddr, "AuthAddr": d.AuthAddr, "UploadAddr": d.UploadAddr,
		"ManifestAddr": d.ManifestAddr, "S3Addr": d.S3Addr, "S3Region": d.S3Region,
		"S3Bucket": d.S3Bucket, "DataDir": d.DataDir, "LogFormat": d.LogFormat,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("withDefaults() = %v, want %v", got, want)
	}
	if d.PartSize != 16<<20 || d.UploadMaxAge != 24*time.Hour ||
		d.AuthCacheTTL != 5*time.Second || d.LogLevel != slog.LevelInfo {
		t.Errorf("withDefaults() part %d, max age %v, ttl %v, level %v; want 16MiB, 24h, 5s, info",
			d.PartSize, d.UploadMaxAge, d.AuthCacheTTL, d.LogLevel)
	}
	for _, target := range []Target{TargetS3, TargetAuth, TargetUpload, TargetManifest,
		TargetGateway} {
		if !d.runs(target) {
			t.Errorf("zero Config runs(%s) = false, want true", target)
		}
	}
}

func TestConfigFromEnvEveryVariable(t *testing.T) {
	cfg, err := ConfigFromEnv(env(map[string]string{
		"KEEL_TARGET":               "Upload, manifest",
		"KEEL_HTTP_ADDR":            ":8080",
		"KEEL_AUTH_ADDR":            ":1",
		"KEEL_UPLOAD_ADDR":          ":2",
		"KEEL_MANIFEST_ADDR":        ":3",
		"KEEL_AUTH_TARGET":          "dns:///auth:9001",
		"KEEL_UPLOAD_TARGET":        "dns:///upload:9002",
		"KEEL_MANIFEST_TARGET":      "dns:///manifest:9003",
		"KEEL_S3_ENDPOINT":          "https://acct.r2.cloudflarestorage.com",
		"KEEL_S3_REGION":            "auto",
		"KEEL_S3_BUCKET":            "images",
		"KEEL_S3_ACCESS_KEY_ID":     "AK",
		"KEEL_S3_SECRET_ACCESS_KEY": "SK",
		"KEEL_S3_PATH_STYLE":        "true",
		"KEEL_S3_PREFIX":            "reg/",
		"KEEL_DATA_DIR":             "/var/lib/keel",
		"KEEL_S3_ADDR":              "127.0.0.1:9100",
		"KEEL_USER":                 "admin:pa:ss",
		"KEEL_READONLY_USER":        "reader:pw",
		"KEEL_ANONYMOUS_PULL":       "1",
		"KEEL_PART_SIZE":            "8MiB",
		"KEEL_UPLOAD_MAX_AGE":       "2h",
		"KEEL_BLOB_REDIRECT":        "true",
		"KEEL_AUTH_CACHE_TTL":       "1s",
		"KEEL_STOP_TIMEOUT":         "3s",
		"KEEL_LOG_LEVEL":            "debug",
		"KEEL_LOG_FORMAT":           "JSON",
	}))
	if err != nil {
		t.Fatalf("ConfigFromEnv() = %v", err)
	}

	want := Config{
		Targets:  []Target{TargetUpload, TargetManifest},
		HTTPAddr: ":8080", AuthAddr: ":1", UploadAddr: ":2", ManifestAddr: ":3",
		AuthTarget: "dns:///auth:9001", UploadTarget: "dns:///upload:9002",
		ManifestTarget: "dns:///manifest:9003",
		S3Endpoint:     "https://acct.r2.cloudflarestorage.com", S3Region: "auto",
		S3Bucket: "images", S3AccessKeyID: "AK", S3SecretAccessKey: "SK", S3PathStyle: true,
		S3Prefix: "reg/", DataDir: "/var/lib/keel", S3Addr: "127.0.0.1:9100",
		Users: []auth.User{
			{Name: "admin", Password: "pa:ss", Access: auth.ReadWrite},
			{Name: "reader", Password: "pw", Access: auth.ReadOnly},
		},
		AnonymousPull: true,
		PartSize:      8 << 20, UploadMaxAge: 2 * time.Hour, BlobRedirect: true,
		AuthCacheTTL: time.Second, StopTimeout: 3 * time.Second,
		LogLevel: slog.LevelDebug, LogFormat: "json",
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("ConfigFromEnv() =\n%#v\nwant\n%#v", cfg, want)
	}
	if cfg.runs(TargetGateway) || cfg.runs(TargetAuth) || cfg.embedsS3() {
		t.Errorf("upload,manifest target runs gateway/auth/s3, want only upload and manifest")
	}
}

func TestConfigFromEnvErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string // a part of the error
	}{
		{"unknown target", map[string]string{"KEEL_TARGET": "gateway,web"}, `"web"`},
		{"bad bool", map[string]string{"KEEL_ANONYMOUS_PULL": "yes"}, "KEEL_ANONYMOUS_PULL"},
		{"bad size", map[string]string{"KEEL_PART_SIZE": "16MB"}, "KEEL_PART_SIZE"},
		{"bad duration", map[string]string{"KEEL_UPLOAD_MAX_AGE": "1 day"}, "KEEL_UPLOAD_MAX_AGE"},
		{"negative duration", map[string]string{"KEEL_AUTH_CACHE_TTL": "-1s"},
			"KEEL_AUTH_CACHE_TTL"},
		{"bad level", map[string]string{"KEEL_LOG_LEVEL": "loud"}, "KEEL_LOG_LEVEL"},
		{"bad format", map[string]string{"KEEL_LOG_FORMAT": "xml"}, "xml"},
		{"user without password", map[string]string{"KEEL_USER": "admin"}, "KEEL_USER"},
		{"gateway alone without targets", map[string]string{"KEEL_TARGET": "gateway"},
			"KEEL_AUTH_TARGET"},
		{"manifest alone without upload", map[string]string{
			"KEEL_TARGET": "manifest", "KEEL_S3_ENDPOINT": "http://s3",
			"KEEL_S3_ACCESS_KEY_ID": "a", "KEEL_S3_SECRET_ACCESS_KEY": "b",
		}, "KEEL_UPLOAD_TARGET"},
		{"endpoint without keys", map[string]string{"KEEL_S3_ENDPOINT": "http://s3"},
			"KEEL_S3_ACCESS_KEY_ID"},
		{"s3 target without keys", map[string]string{"KEEL_TARGET": "s3"},
			"KEEL_S3_ACCESS_KEY_ID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ConfigFromEnv(env(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ConfigFromEnv(%v) = %v, want an error naming %s", tc.env, err, tc.wantErr)
			}
		})
	}
}

func TestConfigFromEnvHidesPasswords(t *testing.T) {
	_, err := ConfigFromEnv(env(map[string]string{"KEEL_USER": ":hunter2"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("ConfigFromEnv(KEEL_USER=:hunter2) = %v, want an error without the password", err)
	}
}

func TestSeparateTargetDefaults(t *testing.T) {
	cfg, err := ConfigFromEnv(env(map[string]string{
		"KEEL_TARGET":               "s3",
		"KEEL_S3_ACCESS_KEY_ID":     "a",
		"KEEL_S3_SECRET_ACCESS_KEY": "b",
	}))
	if err != nil {
		t.Fatalf("ConfigFromEnv(s3) = %v", err)
	}
	d := cfg.withDefaults()
	if d.S3Addr != "127.0.0.1:9000" || d.AuthAddr != ":9001" || d.UploadAddr != ":9002" ||
		d.ManifestAddr != ":9003" {
		t.Errorf("separate target addresses = %s %s %s %s, want 127.0.0.1:9000 :9001 :9002 :9003",
			d.S3Addr, d.AuthAddr, d.UploadAddr, d.ManifestAddr)
	}
	if !d.embedsS3() || d.runs(TargetUpload) || d.runs(TargetGateway) {
		t.Errorf("s3 target: embedsS3 %v, runs upload %v, runs gateway %v; want true false false",
			d.embedsS3(), d.runs(TargetUpload), d.runs(TargetGateway))
	}
}

func TestAllWithEndpointSkipsEmbeddedS3(t *testing.T) {
	cfg, err := ConfigFromEnv(env(map[string]string{
		"KEEL_S3_ENDPOINT":          "https://acct.r2.cloudflarestorage.com",
		"KEEL_S3_ACCESS_KEY_ID":     "a",
		"KEEL_S3_SECRET_ACCESS_KEY": "b",
	}))
	if err != nil {
		t.Fatalf("ConfigFromEnv() = %v", err)
	}
	if cfg.embedsS3() {
		t.Errorf("all target with an endpoint: embedsS3() = true, want false")
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"16777216", 16 << 20, false},
		{"16MiB", 16 << 20, false},
		{"16mib", 16 << 20, false},
		{"512KiB", 512 << 10, false},
		{"1GiB", 1 << 30, false},
		{"5 MiB", 5 << 20, false},
		{"100B", 100, false},
		{"16MB", 0, true},
		{"1.5MiB", 0, true},
		{"-1", 0, true},
		{"MiB", 0, true},
		{"99999999999GiB", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v",
				tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestJanitorInterval(t *testing.T) {
	tests := []struct{ maxAge, want time.Duration }{
		{24 * time.Hour, time.Minute},
		{2 * time.Minute, 30 * time.Second},
		{time.Second, time.Second},
	}
	for _, tc := range tests {
		if got := janitorInterval(tc.maxAge); got != tc.want {
			t.Errorf("janitorInterval(%v) = %v, want %v", tc.maxAge, got, tc.want)
		}
	}
}
