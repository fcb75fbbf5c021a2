package objstore_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

// BenchmarkCompleteMultipart times CompleteMultipartUpload alone on the
// embedded server for one part and for 128 parts of 16 MiB (2 GiB). It
// separates the S3 server's share of closing an upload from keel's: the
// posix backend joins part files on completion, so its time grows with
// the object.
//
//	go test ./internal/objstore -run '^$' -bench CompleteMultipart -benchtime 1x
func BenchmarkCompleteMultipart(b *testing.B) {
	ctx := context.Background()
	st, err := objstore.New(ctx, s3test.Start(b))
	if err != nil {
		b.Fatal(err)
	}
	part := make([]byte, 16<<20)
	for _, n := range []int{1, 128} {
		b.Run(fmt.Sprintf("parts=%d", n), func(b *testing.B) {
			for i := range b.N {
				key := fmt.Sprintf("bench/%d-%d", n, i)
				b.StopTimer()
				id, err := st.CreateMultipart(ctx, key)
				if err != nil {
					b.Fatal(err)
				}
				var parts []objstore.Part
				for p := 1; p <= n; p++ {
					etag, err := st.UploadPart(ctx, key, id, int32(p), part)
					if err != nil {
						b.Fatal(err)
					}
					parts = append(parts, objstore.Part{Number: int32(p), ETag: etag,
						Size: int64(len(part))})
				}
				b.StartTimer()
				if _, err := st.CompleteMultipart(ctx, key, id, parts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				st.Delete(ctx, key)
			}
		})
	}
}
