package objstore_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

// recordedRequest is what the proxy saw of one request.
type recordedRequest struct {
	Method string
	Query  url.Values
	Header http.Header
	Proto  string
}

// recordingProxy is a reverse proxy on 127.0.0.1 in front of the embedded
// server, optionally terminating TLS, that records request headers and can
// corrupt request bodies in flight.
type recordingProxy struct {
	URL     string
	Client  *http.Client
	corrupt atomic.Bool

	mu   sync.Mutex
	reqs []recordedRequest
}

// startProxy starts a recording proxy to target; with useTLS it serves
// HTTPS with a self-signed certificate that its Client trusts.
func startProxy(t *testing.T, target string, useTLS bool) *recordingProxy {
	t.Helper()
	tu, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(tu)
			r.Out.Host = r.In.Host // the signature covers the Host header
		},
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, recordedRequest{
			Method: r.Method,
			Query:  r.URL.Query(),
			Header: r.Header.Clone(),
			Proto:  r.Proto,
		})
		p.mu.Unlock()
		if p.corrupt.Load() && r.ContentLength > 64 {
			r.Body = &flipByte{ReadCloser: r.Body, at: 40}
		}
		rp.ServeHTTP(w, r)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: true}
	if useTLS {
		cert, pool := selfSignedCert(t)
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		go srv.ServeTLS(ln, "", "")
		p.URL = "https://" + ln.Addr().String()
	} else {
		go srv.Serve(ln)
		p.URL = "http://" + ln.Addr().String()
	}
	p.Client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return p
}

// uploads returns the recorded PutObject and UploadPart requests.
func (p *recordingProxy) uploads() []recordedRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []recordedRequest
	for _, r := range p.reqs {
		if r.Method == http.MethodPut && !r.Query.Has("uploads") {
			out = append(out, r)
		}
	}
	return out
}

func (p *recordingProxy) reset() {
	p.mu.Lock()
	p.reqs = nil
	p.mu.Unlock()
}

// flipByte inverts the byte at offset at of a body as it streams through.
type flipByte struct {
	io.ReadCloser
	at, pos int64
}

func (f *flipByte) Read(b []byte) (int, error) {
	n, err := f.ReadCloser.Read(b)
	if i := f.at - f.pos; i >= 0 && i < int64(n) {
		b[i] ^= 0xff
	}
	f.pos += int64(n)
	return n, err
}

// selfSignedCert makes a certificate for 127.0.0.1 and a pool that trusts it.
func selfSignedCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keel test proxy"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// proxiedStore returns a Store that reaches a fresh bucket through a
// recording proxy.
func proxiedStore(t *testing.T, useTLS bool) (*objstore.Store, *recordingProxy) {
	t.Helper()
	cfg := s3test.Start(t)
	p := startProxy(t, cfg.Endpoint, useTLS)
	cfg.Endpoint = p.URL
	cfg.HTTPClient = p.Client
	st, err := objstore.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Ping(testCtx(t)); err != nil {
		t.Fatalf("Ping through proxy: %v", err)
	}
	return st, p
}

func crc32Base64(b []byte) string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.ChecksumIEEE(b))
	return base64.StdEncoding.EncodeToString(sum[:])
}

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// TestHTTPSUnsignedTrailer runs puts and a multipart upload over HTTPS and
// checks that bodies went UNSIGNED-PAYLOAD with a trailing CRC32, that the
// server accepted them, and that it verifies the trailer.
func TestHTTPSUnsignedTrailer(t *testing.T) {
	st, p := proxiedStore(t, true)
	ctx := testCtx(t)

	body := randBytes(t, 100_000)
	put, err := st.Put(ctx, "tls/obj", body, objstore.Condition{IfNoneMatch: true})
	if err != nil {
		t.Fatalf("Put over HTTPS: %v", err)
	}
	got, info, err := st.Get(ctx, "tls/obj")
	if err != nil || !bytes.Equal(got, body) || info.ETag != put.ETag {
		t.Fatalf("Get over HTTPS: %d bytes, ETag %q, %v", len(got), info.ETag, err)
	}
	_, err = st.Put(ctx, "tls/obj", body, objstore.Condition{IfNoneMatch: true})
	if !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Errorf("second If-None-Match put over HTTPS: %v", err)
	}

	multipartRoundTrip(t, st, "tls/multipart")

	ups := p.uploads()
	if len(ups) < 5 { // 2 puts + 3 parts
		t.Fatalf("proxy saw %d upload requests, want >= 5", len(ups))
	}
	for _, r := range ups {
		h := r.Header
		if got := h.Get("X-Amz-Content-Sha256"); got != "STREAMING-UNSIGNED-PAYLOAD-TRAILER" {
			t.Errorf("%s %v: X-Amz-Content-Sha256 = %q, want STREAMING-UNSIGNED-PAYLOAD-TRAILER",
				r.Method, r.Query, got)
		}
		if got := strings.ToLower(h.Get("X-Amz-Trailer")); got != "x-amz-checksum-crc32" {
			t.Errorf("%s %v: X-Amz-Trailer = %q, want x-amz-checksum-crc32", r.Method, r.Query, got)
		}
		if !strings.Contains(h.Get("Content-Encoding"), "aws-chunked") {
			t.Errorf("%s %v: Content-Encoding = %q, want aws-chunked",
				r.Method, r.Query, h.Get("Content-Encoding"))
		}
		if h.Get("X-Amz-Decoded-Content-Length") == "" {
			t.Errorf("%s %v: no X-Amz-Decoded-Content-Length", r.Method, r.Query)
		}
	}
	t.Logf("HTTPS uploads: %d requests, protocol %s", len(ups), ups[0].Proto)

	// A body corrupted in flight must be refused on the strength of the
	// trailing checksum alone (the payload itself is unsigned).
	p.corrupt.Store(true)
	_, err = st.Put(ctx, "tls/corrupt", body, objstore.Condition{})
	p.corrupt.Store(false)
	if err == nil {
		t.Fatal("server accepted a body corrupted in flight over the trailer path")
	}
	t.Logf("corrupted HTTPS body refused: %v", err)
	if _, err := st.Head(ctx, "tls/corrupt"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("corrupted upload left an object: %v", err)
	}
}

// TestHTTPSignedPayload runs puts and a multipart upload over plain HTTP and
// checks that every body was signed (its SHA-256 in the signature), which
// is what guards it there: no CRC32 is computed on top.
func TestHTTPSignedPayload(t *testing.T) {
	st, p := proxiedStore(t, false)
	ctx := testCtx(t)

	body := randBytes(t, 100_000)
	if _, err := st.Put(ctx, "plain/obj", body, objstore.Condition{}); err != nil {
		t.Fatalf("Put over HTTP: %v", err)
	}
	ups := p.uploads()
	if len(ups) != 1 {
		t.Fatalf("proxy saw %d upload requests, want 1", len(ups))
	}
	sum := sha256.Sum256(body)
	got, want := ups[0].Header.Get("X-Amz-Content-Sha256"), hex.EncodeToString(sum[:])
	if got != want {
		t.Errorf("X-Amz-Content-Sha256 = %q, want the body's SHA-256 %q", got, want)
	}
	if got := ups[0].Header.Get("X-Amz-Checksum-Crc32"); got != "" {
		t.Errorf("X-Amz-Checksum-Crc32 = %q over plain HTTP, want none", got)
	}
	p.reset()

	multipartRoundTrip(t, st, "plain/multipart")
	ups = p.uploads()
	if len(ups) != 3 {
		t.Fatalf("proxy saw %d part uploads, want 3", len(ups))
	}
	for _, r := range ups {
		got := r.Header.Get("X-Amz-Content-Sha256")
		signed := hexSHA256.MatchString(got) ||
			strings.HasPrefix(got, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
		if !signed || strings.Contains(got, "UNSIGNED") {
			t.Errorf("part %s: X-Amz-Content-Sha256 = %q, want a signed payload",
				r.Query.Get("partNumber"), got)
		}
		if r.Header.Get("X-Amz-Checksum-Crc32") != "" {
			t.Errorf("part %s: X-Amz-Checksum-Crc32 over plain HTTP, want none",
				r.Query.Get("partNumber"))
		}
	}

	p.corrupt.Store(true)
	_, err := st.Put(ctx, "plain/corrupt", body, objstore.Condition{})
	p.corrupt.Store(false)
	if err == nil {
		t.Fatal("server accepted a body corrupted in flight over the signed path")
	}
	t.Logf("corrupted HTTP body refused: %v", err)
	if _, err := st.Head(ctx, "plain/corrupt"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("corrupted upload left an object: %v", err)
	}
}
