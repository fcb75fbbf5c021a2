package s3embed_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/pkg/xattr"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// start starts a server and registers its Close.
func start(t *testing.T, opts s3embed.Options) *s3embed.Server {
	t.Helper()
	srv, err := s3embed.Start(ctxT(t), opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return srv
}

func storeFor(t *testing.T, srv *s3embed.Server, bucket string) *objstore.Store {
	t.Helper()
	st, err := objstore.New(ctxT(t), objstore.Config{
		Endpoint:        srv.Endpoint(),
		Region:          srv.Region(),
		Bucket:          bucket,
		AccessKeyID:     srv.AccessKey(),
		SecretAccessKey: srv.SecretKey(),
		PathStyle:       true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.EnsureBucket(ctxT(t)); err != nil {
		t.Fatalf("EnsureBucket: %v", err)
	}
	return st
}

func sdkClient(srv *s3embed.Server) *s3.Client {
	return s3.New(s3.Options{
		Region:       srv.Region(),
		BaseEndpoint: aws.String(srv.Endpoint()),
		UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(
			srv.AccessKey(), srv.SecretKey(), ""),
	})
}

// captureOutput redirects the process's stdout and stderr while fn runs and
// returns what was written to them.
func captureOutput(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = w, w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	func() {
		defer func() { os.Stdout, os.Stderr = oldOut, oldErr }()
		fn()
	}()
	w.Close()
	return string(<-done)
}

func TestStartDefaults(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var srv *s3embed.Server
	var dir string
	out := captureOutput(t, func() {
		srv, err = s3embed.Start(ctxT(t), s3embed.Options{})
		if err != nil {
			return
		}
		dir = srv.Dir()
		st := storeFor(t, srv, "defaults")
		if _, err := st.Put(ctxT(t), "k", []byte("v"), objstore.Condition{}); err != nil {
			t.Errorf("Put: %v", err)
		}
		if got, _, err := st.Get(ctxT(t), "k"); err != nil || string(got) != "v" {
			t.Errorf("Get = %q, %v", got, err)
		}
		if _, _, err := st.Get(ctxT(t), "missing"); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Get missing: %v", err)
		}

		// One server per process.
		if _, err := s3embed.Start(ctxT(t), s3embed.Options{}); !errors.Is(err,
			s3embed.ErrAlreadyRunning) {
			t.Errorf("second Start: %v, want ErrAlreadyRunning", err)
		}

		// The posix backend works relative to the working directory.
		now, _ := os.Getwd()
		if now != filepath.Join(dir, "buckets") {
			t.Errorf("working directory while running = %q, want %q",
				now, filepath.Join(dir, "buckets"))
		}
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if out != "" {
		t.Errorf("the embedded server printed:\n%s", out)
	}
	if ok, _ := regexp.MatchString(`^http://127\.0\.0\.1:[1-9][0-9]*$`, srv.Endpoint()); !ok {
		t.Errorf("Endpoint() = %q", srv.Endpoint())
	}
	if len(srv.AccessKey()) < 8 || len(srv.SecretKey()) < 16 {
		t.Errorf("generated keys too short: %q %q", srv.AccessKey(), srv.SecretKey())
	}
	if srv.Region() != "us-east-1" {
		t.Errorf("Region() = %q", srv.Region())
	}
	if now, _ := os.Getwd(); now != wd {
		t.Errorf("working directory after Close = %q, want %q", now, wd)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary data folder %q survived Close: %v", dir, err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	host := strings.TrimPrefix(srv.Endpoint(), "http://")
	if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		c.Close()
		t.Errorf("still listening on %s after Close", host)
	}
}

// TestCopyEnabled checks the copy threshold trap: versitygw's default
// rejects every CopyObject and UploadPartCopy.
func TestCopyEnabled(t *testing.T) {
	srv := start(t, s3embed.Options{})
	st := storeFor(t, srv, "copies")
	ctx := ctxT(t)
	body := bytes.Repeat([]byte("0123456789abcdef"), 6<<16) // 6 MiB
	if _, err := st.Put(ctx, "src", body, objstore.Condition{}); err != nil {
		t.Fatal(err)
	}
	c := sdkClient(srv)
	if _, err := c.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:     aws.String("copies"),
		Key:        aws.String("dst"),
		CopySource: aws.String("copies/src"),
	}); err != nil {
		t.Fatalf("CopyObject: %v", err)
	}
	if got, _, err := st.Get(ctx, "dst"); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("copied object: %d bytes, %v", len(got), err)
	}

	id, err := st.CreateMultipart(ctx, "assembled")
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket:          aws.String("copies"),
		Key:             aws.String("assembled"),
		UploadId:        &id,
		PartNumber:      aws.Int32(1),
		CopySource:      aws.String("copies/src"),
		CopySourceRange: aws.String("bytes=0-5242879"),
	})
	if err != nil {
		t.Fatalf("UploadPartCopy: %v", err)
	}
	tail := []byte("tail")
	etag2, err := st.UploadPart(ctx, "assembled", id, 2, tail)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.CompleteMultipart(ctx, "assembled", id, []objstore.Part{
		{Number: 1, ETag: aws.ToString(out.CopyPartResult.ETag)},
		{Number: 2, ETag: etag2},
	})
	if err != nil {
		t.Fatalf("CompleteMultipart: %v", err)
	}
	got, _, err := st.Get(ctx, "assembled")
	if err != nil || !bytes.Equal(got, append(body[:5<<20:5<<20], tail...)) {
		t.Fatalf("assembled object: %d bytes, %v", len(got), err)
	}
}

// TestMetadataModes checks where object metadata lands in each mode, and
// that it survives a restart on the same folder.
func TestMetadataModes(t *testing.T) {
	for _, sidecar := range []bool{false, true} {
		name := map[bool]string{false: "xattr", true: "sidecar"}[sidecar]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			srv, err := s3embed.Start(ctxT(t), s3embed.Options{
				Dir: dir, Sidecar: sidecar, AccessKey: "ak", SecretKey: "sk12345678",
				Region: "eu-west-2",
			})
			if err != nil {
				t.Fatal(err)
			}
			if srv.AccessKey() != "ak" || srv.SecretKey() != "sk12345678" ||
				srv.Region() != "eu-west-2" || srv.Dir() != dir {
				t.Errorf("server reports %q %q %q %q", srv.AccessKey(), srv.SecretKey(),
					srv.Region(), srv.Dir())
			}
			if srv.Sidecar() != sidecar {
				t.Errorf("Sidecar() = %v, want %v", srv.Sidecar(), sidecar)
			}
			st := storeFor(t, srv, "meta")
			put, err := st.Put(ctxT(t), "a/b", []byte("payload"), objstore.Condition{})
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(dir); err != nil {
				t.Fatalf("caller's data folder removed by Close: %v", err)
			}

			obj := filepath.Join(dir, "buckets", "meta", "a", "b")
			if data, err := os.ReadFile(obj); err != nil || string(data) != "payload" {
				t.Errorf("object file %s: %q, %v", obj, data, err)
			}
			sideEtag := filepath.Join(dir, "meta", "meta", "a", "b", "meta", "etag")
			xa, xerr := xattr.Get(obj, "user.etag")
			sc, serr := os.ReadFile(sideEtag)
			if sidecar {
				if serr != nil || !strings.Contains(put.ETag, strings.Trim(string(sc), `"`)) {
					t.Errorf("sidecar etag %s = %q, %v; put ETag %q", sideEtag, sc, serr, put.ETag)
				}
				if xerr == nil {
					t.Errorf("sidecar mode also wrote xattr user.etag = %q", xa)
				}
			} else {
				if xerr != nil || !strings.Contains(put.ETag, strings.Trim(string(xa), `"`)) {
					t.Errorf("xattr user.etag = %q, %v; put ETag %q", xa, xerr, put.ETag)
				}
				if serr == nil {
					t.Errorf("xattr mode wrote sidecar file %s", sideEtag)
				}
			}

			// Restart on the same folder: the object and its ETag persist.
			srv2 := start(t, s3embed.Options{
				Dir: dir, Sidecar: sidecar, AccessKey: "ak", SecretKey: "sk12345678",
				Region: "eu-west-2",
			})
			st2 := storeFor(t, srv2, "meta")
			got, info, err := st2.Get(ctxT(t), "a/b")
			if err != nil || string(got) != "payload" || info.ETag != put.ETag {
				t.Errorf("after restart: %q %q %v, want payload %q", got, info.ETag, err, put.ETag)
			}
		})
	}
}

func TestExplicitAddr(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := start(t, s3embed.Options{Addr: addr})
	if srv.Endpoint() != "http://"+addr {
		t.Errorf("Endpoint() = %q, want http://%s", srv.Endpoint(), addr)
	}
	st := storeFor(t, srv, "explicit")
	if err := st.Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

func TestStartErrors(t *testing.T) {
	wd, _ := os.Getwd()
	// A port that is taken, given explicitly, is an error (no silent retry).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if srv, err := s3embed.Start(ctxT(t), s3embed.Options{Addr: ln.Addr().String()}); err == nil {
		srv.Close()
		t.Error("Start on a taken port succeeded")
	}
	if now, _ := os.Getwd(); now != wd {
		t.Errorf("failed Start left working directory at %q", now)
	}
	// A failed Start does not hold the one-per-process slot.
	srv := start(t, s3embed.Options{})
	if err := storeFor(t, srv, "after-failure").Ping(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	out, err := sdkClient(srv).ListBuckets(ctxT(t), &s3.ListBucketsInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Buckets) != 1 || aws.ToString(out.Buckets[0].Name) != "after-failure" {
		t.Errorf("buckets = %+v, want only after-failure", out.Buckets)
	}
}

// TestNoXattrFallback needs a folder on a filesystem without user extended
// attributes (ramfs, vfat, some network filesystems) named by
// KEEL_S3EMBED_NOXATTR_DIR, e.g. after `mount -t ramfs none /mnt/noxattr`.
func TestNoXattrFallback(t *testing.T) {
	base := os.Getenv("KEEL_S3EMBED_NOXATTR_DIR")
	if base == "" {
		t.Skip("KEEL_S3EMBED_NOXATTR_DIR not set")
	}
	dir, err := os.MkdirTemp(base, "s3embed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	probe := filepath.Join(dir, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := xattr.Set(probe, "user.x", []byte("1")); err == nil {
		t.Fatalf("%s supports user xattrs; the test needs one that does not", base)
	}
	srv := start(t, s3embed.Options{Dir: dir})
	if !srv.Sidecar() {
		t.Fatal("Sidecar() = false on a filesystem without xattrs")
	}
	st := storeFor(t, srv, "noxattr")
	put, err := st.Put(ctxT(t), "k", []byte("v"), objstore.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	got, info, err := st.Get(ctxT(t), "k")
	if err != nil || string(got) != "v" || info.ETag != put.ETag {
		t.Fatalf("Get = %q %q %v, want v %q", got, info.ETag, err, put.ETag)
	}
}
