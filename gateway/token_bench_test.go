package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keel-registry/keel/gateway"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
)

// BenchmarkGatewayManifestHead measures what authorization adds to one
// request inside the gateway: HEAD of a manifest by tag, served by the
// in-memory manifest service over loopback gRPC, anonymous (pull allowed),
// with a basic login (decision cached) and with a bearer token (verified
// once, then cached). The end-to-end numbers are BenchmarkManifestHead in
// e2e.
func BenchmarkGatewayManifestHead(b *testing.B) {
	th := newTokenHarness(b, func(o *gateway.Options) {
		o.Logger = slog.New(slog.DiscardHandler)
		o.AuthCacheTTL = time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	manifest := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifestType + `","layers":[]}`)
	_, err := th.manifests.PutManifest(ctx, &manifestv1.PutManifestRequest{
		Repository: "public/bench", Reference: "v1", MediaType: ociManifestType,
		Content: manifest,
	})
	if err != nil {
		b.Fatal(err)
	}
	token := benchToken(b, th)

	modes := []struct {
		name string
		auth func(*http.Request)
	}{
		{"anonymous", func(*http.Request) {}},
		{"basic", func(r *http.Request) { r.SetBasicAuth(writerName, writerPass) }},
		{"bearer", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodHead,
						"/v2/public/bench/manifests/v1", nil)
					m.auth(req)
					rec := httptest.NewRecorder()
					th.handler.ServeHTTP(rec, req)
					if rec.Code != http.StatusOK {
						b.Fatalf("HEAD as %s = %d, want 200", m.name, rec.Code)
					}
				}
			})
		})
	}
}

// benchToken gets a pull token for public/bench from the token endpoint.
func benchToken(b *testing.B, th *tokenHarness) string {
	b.Helper()
	req := httptest.NewRequest(http.MethodGet,
		"/token?service=keel&scope=repository:public/bench:pull", nil)
	req.SetBasicAuth(writerName, writerPass)
	rec := httptest.NewRecorder()
	th.handler.ServeHTTP(rec, req)
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != http.StatusOK {
		b.Fatalf("GET /token = %d %s", rec.Code, body)
	}
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		b.Fatal(err)
	}
	return a.Token
}
