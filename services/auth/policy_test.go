package auth

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
)

const testPolicyYAML = `
rules:
  - subjects: [alice]
    repositories: ["team/*"]
    actions: [pull, push]
  - subjects: [alice, bob]
    repositories: ["team/app"]
    actions: [delete]
  - subjects: [bob]
    repositories: ["**"]
    actions: [pull]
  - subjects: [bob]
    actions: [catalog]
  - subjects: [anonymous]
    repositories: ["public/**"]
    actions: [pull]
`

func TestParsePolicyYAMLAndJSON(t *testing.T) {
	fromYAML, err := ParsePolicy([]byte(testPolicyYAML))
	if err != nil {
		t.Fatalf("ParsePolicy(YAML) error = %v", err)
	}
	fromJSON, err := ParsePolicy([]byte(`{"rules": [
		{"subjects": ["alice"], "repositories": ["team/*"], "actions": ["pull", "push"]}
	]}`))
	if err != nil {
		t.Fatalf("ParsePolicy(JSON) error = %v", err)
	}
	if len(fromYAML.Rules) != 5 || len(fromJSON.Rules) != 1 {
		t.Errorf("ParsePolicy() rules = %d and %d, want 5 and 1",
			len(fromYAML.Rules), len(fromJSON.Rules))
	}
	if empty, err := ParsePolicy(nil); err != nil || len(empty.Rules) != 0 {
		t.Errorf("ParsePolicy(empty) = %+v, %v; want no rules", empty, err)
	}

	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(testPolicyYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadPolicy(path)
	if err != nil || len(loaded.Rules) != 5 {
		t.Errorf("LoadPolicy() = %d rules, %v; want 5", len(loaded.Rules), err)
	}
	if _, err := LoadPolicy(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Errorf("LoadPolicy(missing file) error = nil, want an error")
	}
}

func TestParsePolicyRefuses(t *testing.T) {
	tests := map[string]string{
		"unknown field":      `{subjects: [a], repositories: ["**"], actions: [pull], admin: 1}`,
		"unknown action":     `{subjects: [a], repositories: ["**"], actions: [pull, admin]}`,
		"no subjects":        `{repositories: ["**"], actions: [pull]}`,
		"empty subject":      `{subjects: [""], repositories: ["**"], actions: [pull]}`,
		"no actions":         `{subjects: [a], repositories: ["**"]}`,
		"no repositories":    `{subjects: [a], actions: [push]}`,
		"pattern with ..":    `{subjects: [a], repositories: ["team/../x"], actions: [pull]}`,
		"upper-case pattern": `{subjects: [a], repositories: ["Team/*"], actions: [pull]}`,
		"anonymous push":     `{subjects: [anonymous], repositories: ["**"], actions: [pull, push]}`,
		"anonymous catalog":  `{subjects: [anonymous], actions: [catalog]}`,
	}
	if _, err := ParsePolicy([]byte(`[1, 2, 3]`)); err == nil {
		t.Errorf("ParsePolicy(a list) error = nil, want an error")
	}
	for name, r := range tests {
		if _, err := ParsePolicy([]byte("rules: [" + r + "]")); err == nil {
			t.Errorf("ParsePolicy(%s) error = nil, want an error", name)
		}
	}
}

func TestPolicyGrants(t *testing.T) {
	pol, err := ParsePolicy([]byte(testPolicyYAML))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Config{
		Users: []User{
			{Name: "alice", Password: "a-pass", Access: ReadOnly},
			{Name: "bob", Password: "b-pass", Access: ReadOnly},
			{Name: "carol", Password: "c-pass", Access: ReadOnly},
		},
		Policy: pol,
	})
	if err != nil {
		t.Fatalf("NewServer() error = %v", err)
	}
	all := func(name string) *authv1.Access { return repo(name, "pull", "push", "delete") }

	tests := []struct {
		name   string
		cred   *authv1.Credential
		access []*authv1.Access
		want   []string
	}{
		{
			name:   "alice pushes in team/* and deletes only team/app",
			cred:   basic("alice", "a-pass"),
			access: []*authv1.Access{all("team/app"), all("team/web"), all("team/a/b")},
			want: []string{
				"repository:team/a/b:pull", // the built-in read-only rule
				"repository:team/app:delete", "repository:team/app:pull",
				"repository:team/app:push",
				"repository:team/web:pull", "repository:team/web:push",
			},
		},
		{
			name:   "bob pulls everywhere and deletes team/app",
			cred:   basic("bob", "b-pass"),
			access: []*authv1.Access{all("team/app"), all("other/x"), catalog},
			want: []string{
				"registry:catalog:*", "repository:other/x:pull",
				"repository:team/app:delete", "repository:team/app:pull",
			},
		},
		{
			name:   "carol has only her built-in read-only rule",
			cred:   basic("carol", "c-pass"),
			access: []*authv1.Access{all("team/app")},
			want:   []string{"repository:team/app:pull"},
		},
		{
			name:   "anonymous pulls only under public/",
			access: []*authv1.Access{all("public/a/b"), all("public"), all("team/app"), catalog},
			want:   []string{"repository:public/a/b:pull", "repository:public:pull"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.Authorize(testContext(t),
				&authv1.AuthorizeRequest{Credential: tt.cred, Access: tt.access})
			if err != nil {
				t.Fatalf("Authorize() error = %v", err)
			}
			if got := grants(resp); !slices.Equal(got, tt.want) {
				t.Errorf("Authorize() granted %q, want %q", got, tt.want)
			}
		})
	}
}

func TestUserNamedAnonymousIsRefused(t *testing.T) {
	_, err := NewServer(Config{Users: []User{{Name: Anonymous, Password: "x"}}})
	if err == nil {
		t.Errorf("NewServer(user named anonymous) error = nil, want an error")
	}
}
