package s3embed

import "testing"

func TestDialAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:9000": "127.0.0.1:9000",
		":9000":          "127.0.0.1:9000",
		"0.0.0.0:9000":   "127.0.0.1:9000",
		"[::]:9000":      "[::1]:9000",
		"localhost:9000": "localhost:9000",
		"[::1]:9000":     "[::1]:9000",
	} {
		if got := dialAddr(in); got != want {
			t.Errorf("dialAddr(%q) = %q, want %q", in, got, want)
		}
	}
}
