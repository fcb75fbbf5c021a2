package auth

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/ocierr"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func basic(name, password string) *authv1.Credential {
	return &authv1.Credential{Kind: &authv1.Credential_Basic{
		Basic: &authv1.BasicCredential{Username: name, Password: password},
	}}
}

func repo(name string, actions ...string) *authv1.Access {
	return &authv1.Access{Type: "repository", Name: name, Actions: actions}
}

var catalog = &authv1.Access{Type: "registry", Name: "catalog", Actions: []string{"*"}}

// grants flattens a response into "type:name:action" strings.
func grants(resp *authv1.AuthorizeResponse) []string {
	var out []string
	for _, g := range resp.GetGranted() {
		for _, a := range g.GetActions() {
			out = append(out, g.GetType()+":"+g.GetName()+":"+a)
		}
	}
	slices.Sort(out)
	return out
}

func newTestServer(t *testing.T, anonymousPull bool) *Server {
	t.Helper()
	s, err := NewServer(Config{
		Users: []User{
			{Name: "writer", Password: "w-secret", Access: ReadWrite},
			{Name: "reader", Password: "r-secret:with-colon", Access: ReadOnly},
		},
		AnonymousPull: anonymousPull,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("NewServer() error = %v", err)
	}
	return s
}

func TestAuthorizeGrants(t *testing.T) {
	all := []*authv1.Access{repo("team/app", "pull", "push", "delete"), catalog}
	tests := []struct {
		name      string
		anonymous bool
		cred      *authv1.Credential
		access    []*authv1.Access
		subject   string
		want      []string
	}{
		{
			name:    "writer gets everything",
			cred:    basic("writer", "w-secret"),
			access:  all,
			subject: "writer",
			want: []string{
				"registry:catalog:*", "repository:team/app:delete",
				"repository:team/app:pull", "repository:team/app:push",
			},
		},
		{
			name:    "reader gets pull and catalog",
			cred:    basic("reader", "r-secret:with-colon"),
			access:  all,
			subject: "reader",
			want:    []string{"registry:catalog:*", "repository:team/app:pull"},
		},
		{
			name:    "reader asking only to push gets nothing",
			cred:    basic("reader", "r-secret:with-colon"),
			access:  []*authv1.Access{repo("team/app", "push")},
			subject: "reader",
			want:    nil,
		},
		{
			name:      "anonymous with anonymous pull gets pull only",
			anonymous: true,
			access:    all,
			want:      []string{"repository:team/app:pull"},
		},
		{
			name:    "writer with wildcard on a repository",
			cred:    basic("writer", "w-secret"),
			access:  []*authv1.Access{repo("team/app", "*")},
			subject: "writer",
			want:    []string{"repository:team/app:*"},
		},
		{
			name:    "reader with wildcard on a repository",
			cred:    basic("reader", "r-secret:with-colon"),
			access:  []*authv1.Access{repo("team/app", "*")},
			subject: "reader",
			want:    nil,
		},
		{
			name: "odd names, types and actions are not granted",
			cred: basic("writer", "w-secret"),
			access: []*authv1.Access{
				repo("Team/App", "pull"),
				repo("a/../b", "pull"),
				repo("team/app", "pull", "pull", "admin", ""),
				{Type: "registry", Name: "other", Actions: []string{"*"}},
				{Type: "registry", Name: "catalog", Actions: []string{"pull"}},
				{Type: "blob", Name: "team/app", Actions: []string{"pull"}},
			},
			subject: "writer",
			want:    []string{"repository:team/app:pull"},
		},
		{
			name:    "no access asked is a valid login",
			cred:    basic("reader", "r-secret:with-colon"),
			subject: "reader",
			want:    nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.anonymous)
			req := &authv1.AuthorizeRequest{Credential: tt.cred, Access: tt.access}

			resp, err := s.Authorize(testContext(t), req)
			if err != nil {
				t.Fatalf("Authorize() error = %v", err)
			}

			if resp.GetSubject() != tt.subject {
				t.Errorf("Authorize().Subject = %q, want %q", resp.GetSubject(), tt.subject)
			}
			if got := grants(resp); !slices.Equal(got, tt.want) {
				t.Errorf("Authorize() granted %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAuthorizeRefuses(t *testing.T) {
	tests := []struct {
		name          string
		users         []User
		anonymousPull bool
		cred          *authv1.Credential
	}{
		{name: "wrong password", cred: basic("writer", "w-secreT")},
		{name: "password prefix", cred: basic("writer", "w-secre")},
		{name: "password longer", cred: basic("writer", "w-secret!")},
		{name: "empty password", cred: basic("writer", "")},
		{name: "unknown user", cred: basic("nobody", "w-secret")},
		{
			// The unknown-user path compares against a fixed hash; even a
			// password with that hash must not let an unknown user in.
			name: "unknown user with the placeholder password",
			cred: basic("nobody", "keel: no such user"),
		},
		{name: "another user's password", cred: basic("reader", "w-secret")},
		{name: "bearer token", cred: &authv1.Credential{
			Kind: &authv1.Credential_BearerToken{BearerToken: "abc.def.ghi"},
		}},
		{name: "anonymous without anonymous pull"},
		{name: "empty credential", cred: &authv1.Credential{}},
	}
	users := []User{
		{Name: "writer", Password: "w-secret", Access: ReadWrite},
		{Name: "reader", Password: "r-secret", Access: ReadOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewServer(Config{Users: users, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("NewServer() error = %v", err)
			}
			req := &authv1.AuthorizeRequest{
				Credential: tt.cred,
				Access:     []*authv1.Access{repo("team/app", "pull")},
			}

			resp, err := s.Authorize(testContext(t), req)

			if !ocierr.Is(err, ocierr.Unauthorized) {
				t.Fatalf("Authorize() = %v, %v; want UNAUTHORIZED", resp, err)
			}
			if got := status.Code(err); got != codes.Unauthenticated {
				t.Errorf("Authorize() gRPC code = %v, want %v", got, codes.Unauthenticated)
			}
		})
	}
}

func TestDenyByDefault(t *testing.T) {
	s, err := NewServer(Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("NewServer() error = %v", err)
	}
	creds := []*authv1.Credential{nil, basic("admin", "admin"), basic("", "")}
	for _, cred := range creds {
		for _, access := range [][]*authv1.Access{nil, {repo("a", "pull")}, {catalog}} {
			req := &authv1.AuthorizeRequest{Credential: cred, Access: access}

			resp, err := s.Authorize(testContext(t), req)

			if !ocierr.Is(err, ocierr.Unauthorized) {
				t.Errorf("Authorize(%v, %v) = %v, %v; want UNAUTHORIZED", cred, access, resp, err)
			}
		}
	}
}

func TestAuthorizeOverGRPC(t *testing.T) {
	// The error must survive the wire as UNAUTHENTICATED with the OCI code,
	// since that is how the gateway sees it.
	s := newTestServer(t, false)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv1.RegisterAuthServiceServer(gs, s)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := authv1.NewAuthServiceClient(conn)

	_, err = client.Authorize(testContext(t), &authv1.AuthorizeRequest{
		Credential: basic("writer", "nope"),
	})

	if got := ocierr.FromError(err); got.Code != ocierr.Unauthorized || got.HTTPStatus() != 401 {
		t.Errorf("Authorize(wrong password) over gRPC = %v (HTTP %d), want UNAUTHORIZED (401)",
			got, got.HTTPStatus())
	}
	if got := status.Code(err); got != codes.Unauthenticated {
		t.Errorf("Authorize(wrong password) gRPC code = %v, want %v", got, codes.Unauthenticated)
	}
}

func TestParseUser(t *testing.T) {
	tests := []struct {
		in      string
		want    User
		wantErr bool
	}{
		{in: "alice:s3cret", want: User{Name: "alice", Password: "s3cret", Access: ReadWrite}},
		{in: "alice:a:b", want: User{Name: "alice", Password: "a:b", Access: ReadWrite}},
		{in: "alice", wantErr: true},
		{in: "alice:", wantErr: true},
		{in: ":s3cret", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseUser(tt.in, ReadWrite)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseUser(%q) = %#v, %v; want %#v, error %v",
				tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNewServerRefusesBadConfig(t *testing.T) {
	tests := map[string][]User{
		"duplicate":      {{Name: "a", Password: "x"}, {Name: "a", Password: "y"}},
		"empty password": {{Name: "a"}},
		"empty name":     {{Password: "x"}},
		"colon in name":  {{Name: "a:b", Password: "x"}},
		"unknown access": {{Name: "a", Password: "x", Access: Access(7)}},
	}
	for name, users := range tests {
		if _, err := NewServer(Config{Users: users}); err == nil {
			t.Errorf("NewServer(%s) error = nil, want an error", name)
		}
	}
}

func TestUserPrintingHidesPassword(t *testing.T) {
	u := User{Name: "alice", Password: "hunter2", Access: ReadOnly}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(verb, u); strings.Contains(got, "hunter2") {
			t.Errorf("Sprintf(%q, user) = %q, leaks the password", verb, got)
		}
	}
}
