// Package objstore is keel's only boundary to S3-compatible object storage
// (Cloudflare R2, AWS S3, MinIO, versitygw, ...). A Store addresses one
// bucket plus an optional key prefix; every byte keel keeps goes through it.
//
// All errors returned by a Store pass through a single translation step, so
// callers can test them with errors.Is against ErrNotFound and
// ErrPreconditionFailed without knowing anything about the AWS SDK.
package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
)

// Config describes how to reach one bucket of an S3-compatible store.
type Config struct {
	// Endpoint is the base URL of the S3 API, e.g.
	// "https://<account>.r2.cloudflarestorage.com". "" means AWS's default
	// endpoint for Region.
	Endpoint string
	// Region is the signing region. "" means "auto", which is what R2 wants.
	Region string
	// Bucket is the bucket every operation works on.
	Bucket string
	// AccessKeyID is the static access key used to sign requests.
	AccessKeyID string
	// SecretAccessKey is the secret paired with AccessKeyID.
	SecretAccessKey string
	// PathStyle selects path-style addressing (http://host/bucket/key)
	// instead of virtual-hosted style. versitygw and MinIO need it.
	PathStyle bool
	// Prefix is prepended to every key this Store reads or writes, and
	// stripped from keys it lists. "" means none.
	Prefix string
	// HTTPClient sends the requests. nil means a tuned default client with
	// connection reuse (see DefaultHTTPClient).
	HTTPClient *http.Client
	// APIOptions are added to the SDK's middleware stack of every
	// operation, in order: the hook for tracing and metrics. nil means
	// none.
	APIOptions []func(*middleware.Stack) error
}

// ErrNotFound reports that the key, upload or bucket does not exist.
var ErrNotFound = errors.New("not found")

// ErrPreconditionFailed reports that an If-Match or If-None-Match condition
// did not hold (HTTP 412), or that a concurrent conditional write won the
// race (HTTP 409 ConditionalRequestConflict).
var ErrPreconditionFailed = errors.New("precondition failed")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	// Key is the object's key without Config.Prefix.
	Key string
	// Size is the size in bytes of the whole object.
	Size int64
	// ETag is the entity tag exactly as the server sent it, quotes included.
	ETag string
	// LastModified is the server's modification time; zero when the
	// operation's response does not carry one (Put, CompleteMultipart).
	LastModified time.Time
}

// Part is one uploaded part of a multipart upload.
type Part struct {
	// Number is the part number, 1 to 10000.
	Number int32
	// ETag is the part's entity tag exactly as the server sent it.
	ETag string
	// Size is the part's size in bytes.
	Size int64
}

// MultipartUpload is an in-progress multipart upload.
type MultipartUpload struct {
	// Key is the object key without Config.Prefix.
	Key string
	// UploadID identifies the upload.
	UploadID string
	// Initiated is when the upload was created.
	Initiated time.Time
}

// Condition makes a Put conditional. The zero value is unconditional.
//
// A conditional Put whose response is lost in transit is retried by the
// SDK; if the first attempt had in fact succeeded, the retry fails its
// condition and Put returns ErrPreconditionFailed for the caller's own
// write. Callers that must tell the two apart compare the stored content.
type Condition struct {
	// IfNoneMatch makes the Put succeed only if no object exists at the
	// key (If-None-Match: *).
	IfNoneMatch bool
	// IfMatch, when not "", makes the Put succeed only if the current
	// object's ETag equals it (If-Match). Pass the ETag exactly as a Store
	// returned it. Some servers (AWS among them) answer 404 rather than 412
	// when the key does not exist, which surfaces as ErrNotFound.
	IfMatch string
}

// Store is a client for one bucket (plus optional key prefix) of an
// S3-compatible object store. It is safe for concurrent use.
type Store struct {
	client  *s3.Client
	presign *s3.PresignClient
	bucket  string
	prefix  string
	region  string
}

// errNoBucket marks an ErrNotFound that is about the bucket itself, so that
// "missing is fine" operations such as Delete still report it.
var errNoBucket = errors.New("no such bucket")

// listPageSize is the most keys S3 returns in one list request.
const listPageSize = 1000

// DefaultHTTPClient returns the HTTP client New uses when Config.HTTPClient
// is nil: keep-alives on, with a large idle pool per host so that parallel
// uploads and downloads reuse connections instead of redialling.
func DefaultHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   30 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: 1 * time.Second,
	}
	return &http.Client{Transport: tr}
}

// New returns a Store for cfg. It does not contact the server (ctx is unused
// today); use Ping or EnsureBucket for that.
func New(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("objstore: Config.Bucket is required")
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, errors.New("objstore: Config.AccessKeyID and SecretAccessKey are required")
	}
	region := cfg.Region
	if region == "" {
		region = "auto"
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = DefaultHTTPClient()
	}
	opts := s3.Options{
		Region: region,
		Credentials: credentials.NewStaticCredentialsProvider(
			cfg.AccessKeyID, cfg.SecretAccessKey, ""),
		UsePathStyle:               cfg.PathStyle,
		HTTPClient:                 hc,
		RequestChecksumCalculation: requestChecksums(cfg.Endpoint),
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		Retryer:                    newRetryer(),
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(strings.TrimRight(cfg.Endpoint, "/"))
	}
	opts.APIOptions = append(opts.APIOptions, cfg.APIOptions...)
	client := s3.New(opts)
	return &Store{
		client:  client,
		presign: s3.NewPresignClient(client),
		bucket:  cfg.Bucket,
		prefix:  cfg.Prefix,
		region:  region,
	}, nil
}

// requestChecksums chooses what guards an upload's body in flight. Over
// HTTPS the SDK sends the body UNSIGNED-PAYLOAD, so it must carry a CRC32,
// in a trailer, for the server to check. Over plain HTTP the SDK signs the
// body's SHA-256, which the server checks already; a CRC32 on top would
// only read every byte once more (about 4% of the upload service's CPU).
func requestChecksums(endpoint string) aws.RequestChecksumCalculation {
	if strings.HasPrefix(strings.ToLower(endpoint), "http://") {
		return aws.RequestChecksumCalculationWhenRequired
	}
	return aws.RequestChecksumCalculationWhenSupported
}

// newRetryer returns the SDK's standard retryer, which also retries
// ExistingObjectIsDirectory. Keys the registry writes never name a folder,
// so a store that answers this is one that keeps objects as files
// (versitygw's posix backend, the embedded default) and removed a folder
// that had just become empty while this write was creating a key inside
// it. The write succeeds when tried again.
func newRetryer() aws.Retryer {
	return retry.AddWithErrorCodes(retry.NewStandard(), "ExistingObjectIsDirectory")
}

// translate is the one place where SDK errors become objstore errors. It
// maps missing keys, uploads and buckets to ErrNotFound, failed conditions
// to ErrPreconditionFailed, and wraps everything else with the operation
// name. The original error stays in the chain for errors.As.
func translate(err error) error {
	if err == nil {
		return nil
	}
	op := "request"
	var opErr *smithy.OperationError
	if errors.As(err, &opErr) {
		op = opErr.OperationName
	}
	code := ""
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	switch {
	case code == "NoSuchBucket":
		return fmt.Errorf("objstore: %s: %w: %w: %w", op, ErrNotFound, errNoBucket, err)
	case code == "NoSuchKey" || code == "NotFound" || code == "NoSuchUpload" ||
		status == http.StatusNotFound:
		return fmt.Errorf("objstore: %s: %w: %w", op, ErrNotFound, err)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed ||
		code == "ConditionalRequestConflict":
		return fmt.Errorf("objstore: %s: %w: %w", op, ErrPreconditionFailed, err)
	}
	return fmt.Errorf("objstore: %s: %w", op, err)
}

// key returns the full object key for a caller's key.
func (s *Store) key(k string) string { return s.prefix + k }

// strip removes Config.Prefix from a key the server returned.
func (s *Store) strip(k string) string { return strings.TrimPrefix(k, s.prefix) }

// EnsureBucket creates the bucket if it does not exist. An existing bucket
// owned by the caller is not an error.
func (s *Store) EnsureBucket(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	if err == nil {
		return nil
	}
	if terr := translate(err); !errors.Is(terr, ErrNotFound) {
		return terr
	}
	in := &s3.CreateBucketInput{Bucket: &s.bucket}
	if s.region != "auto" && s.region != "us-east-1" {
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(s.region),
		}
	}
	_, err = s.client.CreateBucket(ctx, in)
	if err = translate(err); err != nil {
		var owned *types.BucketAlreadyOwnedByYou
		if errors.As(err, &owned) {
			return nil // created concurrently by us
		}
		return err
	}
	return nil
}

// Ping checks that the bucket is reachable with the configured credentials
// (HeadBucket).
func (s *Store) Ping(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &s.bucket})
	return translate(err)
}

// Get reads a whole object into memory. Use it for small objects only
// (manifests, indexes); stream blobs with Open.
func (s *Store) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: &s.bucket,
		Key:    aws.String(s.key(key)),
	})
	if err != nil {
		return nil, ObjectInfo{}, translate(err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, ObjectInfo{}, fmt.Errorf("objstore: GetObject %q: read body: %w", key, err)
	}
	info := ObjectInfo{
		Key:          key,
		Size:         int64(len(data)),
		ETag:         aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
	}
	return data, info, nil
}

// Open streams length bytes of an object starting at offset; length < 0
// reads to the end. The returned info's Size is the size of the whole
// object, not of the range. The caller must close the reader.
func (s *Store) Open(
	ctx context.Context, key string, offset, length int64,
) (io.ReadCloser, ObjectInfo, error) {
	if offset < 0 {
		return nil, ObjectInfo{}, fmt.Errorf("objstore: Open %q: negative offset %d", key, offset)
	}
	if length == 0 {
		info, err := s.Head(ctx, key)
		if err != nil {
			return nil, ObjectInfo{}, err
		}
		return io.NopCloser(bytes.NewReader(nil)), info, nil
	}
	in := &s3.GetObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(key))}
	ranged := offset > 0 || length > 0
	if ranged {
		r := "bytes=" + strconv.FormatInt(offset, 10) + "-"
		if length > 0 {
			r += strconv.FormatInt(offset+length-1, 10)
		}
		in.Range = &r
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		return nil, ObjectInfo{}, translate(err)
	}
	info := ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
	}
	body := out.Body
	if total, ok := contentRangeTotal(aws.ToString(out.ContentRange)); ok {
		info.Size = total
	} else if ranged {
		// The server ignored the range and sent the whole object.
		if offset > 0 {
			body.Close()
			return nil, ObjectInfo{}, fmt.Errorf(
				"objstore: GetObject %q: ranged response without Content-Range", key)
		}
		body = limitedReadCloser{io.LimitReader(body, length), body}
	}
	return body, info, nil
}

// limitedReadCloser reads from a limited view of a body and closes the body.
type limitedReadCloser struct {
	io.Reader
	io.Closer
}

// contentRangeTotal extracts the complete length from a Content-Range
// header such as "bytes 0-9/100".
func contentRangeTotal(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 || i == len(cr)-1 || cr[i+1:] == "*" {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// Head returns an object's metadata.
func (s *Store) Head(ctx context.Context, key string) (ObjectInfo, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: &s.bucket,
		Key:    aws.String(s.key(key)),
	})
	if err != nil {
		return ObjectInfo{}, translate(err)
	}
	return ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// Put writes body at key, subject to cond. It returns the new object's
// info; LastModified is zero because PutObject does not report it.
func (s *Store) Put(
	ctx context.Context, key string, body []byte, cond Condition,
) (ObjectInfo, error) {
	in := &s3.PutObjectInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.key(key)),
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
	}
	if cond.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if cond.IfMatch != "" {
		in.IfMatch = aws.String(cond.IfMatch)
	}
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		return ObjectInfo{}, translate(err)
	}
	return ObjectInfo{Key: key, Size: int64(len(body)), ETag: aws.ToString(out.ETag)}, nil
}

// Copy copies the object at src to dst. The server copies the bytes; none
// pass through this process.
func (s *Store) Copy(ctx context.Context, src, dst string) error {
	_, err := s.client.CopyObject(ctx, &s3.CopyObjectInput{
		Bucket:     &s.bucket,
		Key:        aws.String(s.key(dst)),
		CopySource: aws.String(s.copySource(src)),
	})
	return translate(err)
}

// copySource is the CopySource of an object: the bucket and the key, with
// each path segment URL-encoded.
func (s *Store) copySource(key string) string {
	segs := strings.Split(s.key(key), "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(seg)
	}
	return s.bucket + "/" + strings.Join(segs, "/")
}

// Delete removes key. Deleting a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: &s.bucket,
		Key:    aws.String(s.key(key)),
	})
	if err = translate(err); errors.Is(err, ErrNotFound) && !errors.Is(err, errNoBucket) {
		return nil
	}
	return err
}

// List returns keys under prefix that sort after startAfter ("" for from
// the start), in lexical order. With a delimiter, keys that contain it after
// the prefix are rolled up into prefixes (S3 CommonPrefixes). Keys and
// prefixes are returned without Config.Prefix. limit bounds the number of
// keys plus prefixes; limit <= 0 means all, fetched page by page. truncated
// reports that more results follow; resume by passing the greatest key or
// prefix returned as startAfter (a server may roll keys after a returned
// prefix up into that same prefix again, so callers that resume after a
// prefix should skip it).
func (s *Store) List(
	ctx context.Context, prefix, startAfter, delimiter string, limit int,
) (keys []string, prefixes []string, truncated bool, err error) {
	in := &s3.ListObjectsV2Input{
		Bucket: &s.bucket,
		Prefix: aws.String(s.key(prefix)),
	}
	if startAfter != "" {
		in.StartAfter = aws.String(s.key(startAfter))
	}
	if delimiter != "" {
		in.Delimiter = aws.String(delimiter)
	}
	for {
		page := listPageSize
		if limit > 0 {
			page = min(page, limit-len(keys)-len(prefixes))
		}
		in.MaxKeys = aws.Int32(int32(page))
		out, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			return nil, nil, false, translate(err)
		}
		for _, o := range out.Contents {
			keys = append(keys, s.strip(aws.ToString(o.Key)))
		}
		for _, p := range out.CommonPrefixes {
			prefixes = append(prefixes, s.strip(aws.ToString(p.Prefix)))
		}
		more := aws.ToBool(out.IsTruncated) && aws.ToString(out.NextContinuationToken) != ""
		if !more {
			return keys, prefixes, false, nil
		}
		if limit > 0 && len(keys)+len(prefixes) >= limit {
			return keys, prefixes, true, nil
		}
		in.ContinuationToken = out.NextContinuationToken
		in.StartAfter = nil
	}
}

// CreateMultipart starts a multipart upload to key and returns its ID.
func (s *Store) CreateMultipart(ctx context.Context, key string) (uploadID string, err error) {
	out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: &s.bucket,
		Key:    aws.String(s.key(key)),
	})
	if err != nil {
		return "", translate(err)
	}
	return aws.ToString(out.UploadId), nil
}

// UploadPart uploads part number (1 to 10000) of an upload and returns its
// ETag. Every part but the last must be at least 5 MiB.
func (s *Store) UploadPart(
	ctx context.Context, key, uploadID string, number int32, body []byte,
) (etag string, err error) {
	out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
		Bucket:        &s.bucket,
		Key:           aws.String(s.key(key)),
		UploadId:      &uploadID,
		PartNumber:    &number,
		Body:          bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))),
	})
	if err != nil {
		return "", translate(err)
	}
	return aws.ToString(out.ETag), nil
}

// UploadPartCopy uploads part number of an upload to key from the whole
// object at src, copied by the server, and returns the part's ETag.
func (s *Store) UploadPartCopy(
	ctx context.Context, key, uploadID string, number int32, src string,
) (etag string, err error) {
	out, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{
		Bucket:     &s.bucket,
		Key:        aws.String(s.key(key)),
		UploadId:   &uploadID,
		PartNumber: &number,
		CopySource: aws.String(s.copySource(src)),
	})
	if err != nil {
		return "", translate(err)
	}
	if out.CopyPartResult == nil {
		return "", fmt.Errorf("copy part %d of %s: no result", number, key)
	}
	return aws.ToString(out.CopyPartResult.ETag), nil
}

// CompleteMultipart assembles the parts, in the order given, into the
// object at key. The returned info's Size is the sum of the parts' Size
// fields as passed in, and LastModified is zero.
func (s *Store) CompleteMultipart(
	ctx context.Context, key, uploadID string, parts []Part,
) (ObjectInfo, error) {
	completed := make([]types.CompletedPart, len(parts))
	var size int64
	for i, p := range parts {
		completed[i] = types.CompletedPart{
			ETag:       aws.String(p.ETag),
			PartNumber: aws.Int32(p.Number),
		}
		size += p.Size
	}
	out, err := s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket:          &s.bucket,
		Key:             aws.String(s.key(key)),
		UploadId:        &uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: completed},
	})
	if err != nil {
		return ObjectInfo{}, translate(err)
	}
	return ObjectInfo{Key: key, Size: size, ETag: aws.ToString(out.ETag)}, nil
}

// AbortMultipart cancels an upload and frees its parts. Aborting an unknown
// upload is not an error.
func (s *Store) AbortMultipart(ctx context.Context, key, uploadID string) error {
	_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
		Bucket:   &s.bucket,
		Key:      aws.String(s.key(key)),
		UploadId: &uploadID,
	})
	if err = translate(err); errors.Is(err, ErrNotFound) && !errors.Is(err, errNoBucket) {
		return nil
	}
	return err
}

// ListParts returns all parts uploaded so far, in part-number order.
func (s *Store) ListParts(ctx context.Context, key, uploadID string) ([]Part, error) {
	in := &s3.ListPartsInput{
		Bucket:   &s.bucket,
		Key:      aws.String(s.key(key)),
		UploadId: &uploadID,
	}
	var parts []Part
	for {
		out, err := s.client.ListParts(ctx, in)
		if err != nil {
			return nil, translate(err)
		}
		for _, p := range out.Parts {
			parts = append(parts, Part{
				Number: aws.ToInt32(p.PartNumber),
				ETag:   aws.ToString(p.ETag),
				Size:   aws.ToInt64(p.Size),
			})
		}
		next := aws.ToString(out.NextPartNumberMarker)
		if !aws.ToBool(out.IsTruncated) || next == "" ||
			next == aws.ToString(in.PartNumberMarker) {
			return parts, nil
		}
		in.PartNumberMarker = &next
	}
}

// ListMultipartUploads returns every in-progress upload whose key starts
// with prefix. Keys are returned without Config.Prefix.
func (s *Store) ListMultipartUploads(
	ctx context.Context, prefix string,
) ([]MultipartUpload, error) {
	in := &s3.ListMultipartUploadsInput{
		Bucket: &s.bucket,
		Prefix: aws.String(s.key(prefix)),
	}
	var ups []MultipartUpload
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return nil, translate(err)
		}
		for _, u := range out.Uploads {
			ups = append(ups, MultipartUpload{
				Key:       s.strip(aws.ToString(u.Key)),
				UploadID:  aws.ToString(u.UploadId),
				Initiated: aws.ToTime(u.Initiated),
			})
		}
		nk, nu := aws.ToString(out.NextKeyMarker), aws.ToString(out.NextUploadIdMarker)
		if !aws.ToBool(out.IsTruncated) || (nk == "" && nu == "") ||
			(nk == aws.ToString(in.KeyMarker) && nu == aws.ToString(in.UploadIdMarker)) {
			return ups, nil
		}
		in.KeyMarker, in.UploadIdMarker = &nk, &nu
	}
}

// PresignGet returns a URL that lets anyone holding it GET key for ttl,
// without credentials.
func (s *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{
		Bucket: &s.bucket,
		Key:    aws.String(s.key(key)),
	}, s3.WithPresignExpires(ttl))
	if err != nil {
		return "", translate(err)
	}
	return req.URL, nil
}
