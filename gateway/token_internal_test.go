package gateway

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientAddress(t *testing.T) {
	trusted := proxies{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name    string
		proxies proxies
		remote  string
		xff     []string
		want    string
	}{
		{"no proxies: the header is ignored", nil, "192.0.2.1:5555",
			[]string{"203.0.113.9"}, "192.0.2.1"},
		{"untrusted peer: the header is ignored", trusted, "192.0.2.1:5555",
			[]string{"203.0.113.9"}, "192.0.2.1"},
		{"trusted peer: the nearest untrusted hop", trusted, "127.0.0.1:5555",
			[]string{"198.51.100.1, 203.0.113.9", "10.1.2.3"}, "203.0.113.9"},
		{"trusted peer, garbage hop: the peer", trusted, "127.0.0.1:5555",
			[]string{"203.0.113.9, not-an-ip"}, "127.0.0.1"},
		{"trusted peer, no header: the peer", trusted, "10.0.0.7:5555", nil, "10.0.0.7"},
		{"IPv4-mapped IPv6 peer", trusted, "[::ffff:127.0.0.1]:5555",
			[]string{"203.0.113.9"}, "203.0.113.9"},
	}
	for _, tt := range tests {
		r := &http.Request{RemoteAddr: tt.remote, Header: http.Header{}}
		for _, v := range tt.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tt.proxies.clientAddress(r); got != tt.want {
			t.Errorf("%s: clientAddress() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestParseScope(t *testing.T) {
	ok := map[string]string{
		"repository:team/app:pull,push":   "repository team/app [pull push]",
		"repository:a:*":                  "repository a [*]",
		"repository:a/b/c:delete":         "repository a/b/c [delete]",
		"registry:catalog:*":              "registry catalog [*]",
		"repository:a-b.c__d/e:pull,pull": "repository a-b.c__d/e [pull pull]",
	}
	for in, want := range ok {
		a, err := parseScope(in)
		if err != nil {
			t.Errorf("parseScope(%q) error = %v", in, err)
			continue
		}
		if got := a.GetType() + " " + a.GetName() + " " + fmtList(a.GetActions()); got != want {
			t.Errorf("parseScope(%q) = %s, want %s", in, got, want)
		}
	}
}

func fmtList(s []string) string {
	out := "["
	for i, v := range s {
		if i > 0 {
			out += " "
		}
		out += v
	}
	return out + "]"
}
