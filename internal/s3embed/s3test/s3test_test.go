package s3test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/keel-registry/keel/internal/objstore"
)

func TestMain(m *testing.M) { Main(m) }

var validBucket = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$`)

func TestBucketName(t *testing.T) {
	names := map[string]bool{}
	for i, tn := range []string{
		"TestX",
		"TestX/sub_case",
		"TestX/sub case #2",
		"Test_With__Many___Underscores",
		strings.Repeat("TestVeryLongName", 10),
		"Test/ünïcödé/名前",
		"___",
	} {
		got := bucketName(tn, int64(i+1))
		if !validBucket.MatchString(got) || strings.Contains(got, "--") {
			t.Errorf("bucketName(%q) = %q, not a valid bucket name", tn, got)
		}
		if names[got] {
			t.Errorf("bucketName(%q) = %q, a duplicate", tn, got)
		}
		names[got] = true
	}
	if a, b := bucketName("TestX", 1), bucketName("TestX", 2); a == b {
		t.Errorf("same name for different sequence numbers: %q", a)
	}
}

func TestStartSharesServerFreshBuckets(t *testing.T) {
	ctx := context.Background()
	a := Start(t)
	b := Start(t)
	if a.Endpoint != b.Endpoint || a.AccessKeyID != b.AccessKeyID {
		t.Errorf("two servers: %s and %s", a.Endpoint, b.Endpoint)
	}
	if a.Bucket == b.Bucket {
		t.Fatalf("same bucket twice: %s", a.Bucket)
	}
	if !a.PathStyle || a.Prefix != "" {
		t.Errorf("config = %+v", a)
	}
	if Server(t).Endpoint() != a.Endpoint {
		t.Errorf("Server() endpoint %s != %s", Server(t).Endpoint(), a.Endpoint)
	}
	sa, err := objstore.New(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := objstore.New(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sa.Put(ctx, "k", []byte("a"), objstore.Condition{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := sb.Get(ctx, "k"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("bucket b sees bucket a's key: %v", err)
	}
	keys, _, _, err := sb.List(ctx, "", "", "", 0)
	if err != nil || len(keys) != 0 {
		t.Errorf("fresh bucket lists %q, %v", keys, err)
	}
}
