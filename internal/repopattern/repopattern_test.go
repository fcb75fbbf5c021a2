package repopattern

import "testing"

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		miss    []string
	}{
		{"team/app", []string{"team/app"},
			[]string{"team/app2", "team", "team/app/x", "x/team/app"}},
		{"team/*", []string{"team/app", "team/a.b"}, []string{"team", "team/a/b", "other/app"}},
		{"team/**", []string{"team", "team/app", "team/a/b/c"}, []string{"teams/app", "x/team"}},
		{"**", []string{"a", "a/b", "library/alpine"}, nil},
		{"*/app", []string{"team/app", "x/app"}, []string{"app", "a/b/app"}},
		{"app-*", []string{"app-", "app-1", "app-web"}, []string{"app", "web-app", "app-1/x"}},
		{"a/**/z", []string{"a/z", "a/b/z", "a/b/c/z"}, []string{"a/b", "z", "a/z/y"}},
		{"*", []string{"alpine"}, []string{"library/alpine"}},
	}
	for _, tt := range tests {
		p, err := Compile(tt.pattern)
		if err != nil {
			t.Fatalf("Compile(%q) error = %v", tt.pattern, err)
		}
		for _, name := range tt.match {
			if !p.Match(name) {
				t.Errorf("Compile(%q).Match(%q) = false, want true", tt.pattern, name)
			}
		}
		for _, name := range tt.miss {
			if p.Match(name) {
				t.Errorf("Compile(%q).Match(%q) = true, want false", tt.pattern, name)
			}
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, s := range []string{
		"", "/", "team/", "/team", "team//app", "../team", "team/..", "team/a..b",
		"Team/app", "team/app?", "team/**x", "a**", "team app", "team\\app", "team/app:tag",
	} {
		if _, err := Compile(s); err == nil {
			t.Errorf("Compile(%q) error = nil, want an error", s)
		}
	}
}

func TestZeroPatternMatchesNothing(t *testing.T) {
	if (Pattern{}).Match("a") {
		t.Errorf("Pattern{}.Match(a) = true, want false")
	}
}
