package gateway

import (
	"slices"
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		path  string
		want  routeMatch
		noWay bool
	}{
		{path: "/v2/", want: routeMatch{route: routeBase}},
		{path: "/v2", want: routeMatch{route: routeBase}},
		{path: "/v2/_catalog", want: routeMatch{route: routeCatalog}},
		{path: "/v2/a/b/manifests/latest", want: routeMatch{routeManifest, "a/b", "latest"}},
		{path: "/v2/a/blobs/sha256:1", want: routeMatch{routeBlob, "a", "sha256:1"}},
		{path: "/v2/a/blobs/uploads/", want: routeMatch{routeUploads, "a", ""}},
		{path: "/v2/a/blobs/uploads/u-1", want: routeMatch{routeUpload, "a", "u-1"}},
		{path: "/v2/a/tags/list", want: routeMatch{routeTags, "a", ""}},
		{path: "/v2/a/referrers/sha256:1", want: routeMatch{routeReferrers, "a", "sha256:1"}},
		// The last marker wins, so names may hold route words.
		{path: "/v2/x/manifests/y/blobs/d", want: routeMatch{routeBlob, "x/manifests/y", "d"}},
		{
			path: "/v2/x/blobs/uploads/manifests/t",
			want: routeMatch{routeManifest, "x/blobs/uploads", "t"},
		},
		{path: "/v2/x/tags/list/blobs/uploads/", want: routeMatch{routeUploads, "x/tags/list", ""}},
		{path: "/v2/a/blobs/", noWay: true},
		{path: "/v2/a/manifests/", noWay: true},
		{path: "/v2/a/tags/list/", noWay: true},
		{path: "/v2/a/blobs/uploads/u/v", noWay: true},
		{path: "/v2/a", noWay: true},
		{path: "/v1/a/tags/list", noWay: true},
	}
	for _, tt := range tests {
		got, err := match(tt.path)
		if tt.noWay {
			if err == nil {
				t.Errorf("match(%q) = %+v, want no route", tt.path, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("match(%q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

func TestRangeResolve(t *testing.T) {
	tests := []struct {
		header string
		size   int64
		want   byteRange
		ok     bool
	}{
		{"bytes=0-9", 100, byteRange{0, 10}, true},
		{"bytes=90-200", 100, byteRange{90, 10}, true},
		{"bytes=50-", 100, byteRange{50, 50}, true},
		{"bytes=-10", 100, byteRange{90, 10}, true},
		{"bytes=-1000", 100, byteRange{0, 100}, true},
		{"bytes=100-", 100, byteRange{}, false},
		{"bytes=-0", 100, byteRange{}, false},
		{"bytes=0-", 0, byteRange{}, false},
		{"bytes=5-1", 100, byteRange{}, false},
	}
	for _, tt := range tests {
		spec, parsed := parseRange(tt.header)
		if !parsed {
			t.Errorf("parseRange(%q) ignored the header, want a range", tt.header)
			continue
		}
		if got, ok := spec.resolve(tt.size); got != tt.want || ok != tt.ok {
			t.Errorf("resolve(%q, %d) = %+v, %v; want %+v, %v",
				tt.header, tt.size, got, ok, tt.want, tt.ok)
		}
	}
	for _, h := range []string{"", "items=0-1", "bytes=0-1,3-4", "bytes=a-b", "bytes=-"} {
		if spec, ok := parseRange(h); ok {
			t.Errorf("parseRange(%q) = %+v, want it ignored", h, spec)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last int64
		ok          bool
	}{
		{"0-99", 0, 99, true},
		{"100-199", 100, 199, true},
		{"bytes 100-199/*", 100, 199, true},
		{"bytes 100-199/500", 100, 199, true},
		{"bytes=5-5", 5, 5, true},
		{"9-1", 0, 0, false},
		{"-1-5", 0, 0, false},
		{"abc", 0, 0, false},
		{"bytes */100", 0, 0, false},
	}
	for _, tt := range tests {
		first, last, ok := parseContentRange(tt.in)
		if first != tt.first || last != tt.last || ok != tt.ok {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v",
				tt.in, first, last, ok, tt.first, tt.last, tt.ok)
		}
	}
}

func TestAcceptedTypes(t *testing.T) {
	got := acceptedTypes([]string{
		"application/a+json; q=0.5, application/b+json",
		" application/c+json ,, application/a+json",
	})
	want := []string{"application/a+json", "application/b+json", "application/c+json"}
	if !slices.Equal(got, want) {
		t.Errorf("acceptedTypes() = %q, want %q", got, want)
	}
}
