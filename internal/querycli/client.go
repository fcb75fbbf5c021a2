package querycli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/transport"
)

// Client is the query API, whichever way it is reached: gRPC straight to
// the manifest service, or JSON through the gateway. Errors are gRPC
// status errors either way.
type Client interface {
	ListRepositories(ctx context.Context, in *manifestv1.QueryServiceListRepositoriesRequest) (
		*manifestv1.QueryServiceListRepositoriesResponse, error)
	ListTags(ctx context.Context, in *manifestv1.QueryServiceListTagsRequest) (
		*manifestv1.QueryServiceListTagsResponse, error)
	ResolveReference(ctx context.Context, in *manifestv1.QueryServiceResolveReferenceRequest) (
		*manifestv1.QueryServiceResolveReferenceResponse, error)
	InspectManifest(ctx context.Context, in *manifestv1.QueryServiceInspectManifestRequest) (
		*manifestv1.QueryServiceInspectManifestResponse, error)
	ListReferrers(ctx context.Context, in *manifestv1.QueryServiceListReferrersRequest) (
		*manifestv1.QueryServiceListReferrersResponse, error)
	// WatchChanges calls fn with each response of the stream, bookmarks
	// included, until the stream ends, ctx ends or fn fails.
	WatchChanges(ctx context.Context, in *manifestv1.QueryServiceWatchChangesRequest,
		fn func(*manifestv1.QueryServiceWatchChangesResponse) error) error
	// Close releases the client's connections.
	Close() error
}

// grpcClient reaches the query API over gRPC.
type grpcClient struct {
	conn *grpc.ClientConn
	q    manifestv1.QueryServiceClient
}

// DialGRPC returns a Client that talks gRPC to the manifest service at
// target ("host:port"), without credentials: the service trusts its
// network, as every keel service does. It connects on the first call.
func DialGRPC(target string) (Client, error) {
	conn, err := transport.Dial(target)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return &grpcClient{conn: conn, q: manifestv1.NewQueryServiceClient(conn)}, nil
}

// ListRepositories implements Client.
func (c *grpcClient) ListRepositories(
	ctx context.Context, in *manifestv1.QueryServiceListRepositoriesRequest,
) (*manifestv1.QueryServiceListRepositoriesResponse, error) {
	return c.q.ListRepositories(ctx, in)
}

// ListTags implements Client.
func (c *grpcClient) ListTags(
	ctx context.Context, in *manifestv1.QueryServiceListTagsRequest,
) (*manifestv1.QueryServiceListTagsResponse, error) {
	return c.q.ListTags(ctx, in)
}

// ResolveReference implements Client.
func (c *grpcClient) ResolveReference(
	ctx context.Context, in *manifestv1.QueryServiceResolveReferenceRequest,
) (*manifestv1.QueryServiceResolveReferenceResponse, error) {
	return c.q.ResolveReference(ctx, in)
}

// InspectManifest implements Client.
func (c *grpcClient) InspectManifest(
	ctx context.Context, in *manifestv1.QueryServiceInspectManifestRequest,
) (*manifestv1.QueryServiceInspectManifestResponse, error) {
	return c.q.InspectManifest(ctx, in)
}

// ListReferrers implements Client.
func (c *grpcClient) ListReferrers(
	ctx context.Context, in *manifestv1.QueryServiceListReferrersRequest,
) (*manifestv1.QueryServiceListReferrersResponse, error) {
	return c.q.ListReferrers(ctx, in)
}

// WatchChanges implements Client.
func (c *grpcClient) WatchChanges(
	ctx context.Context, in *manifestv1.QueryServiceWatchChangesRequest,
	fn func(*manifestv1.QueryServiceWatchChangesResponse) error,
) error {
	stream, err := c.q.WatchChanges(ctx, in)
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(resp); err != nil {
			return err
		}
	}
}

// Close implements Client.
func (c *grpcClient) Close() error { return c.conn.Close() }

// httpClient reaches the query API as JSON through the gateway.
type httpClient struct {
	base     string
	username string
	password string
	http     *http.Client
}

// NewHTTP returns a Client that talks JSON to the gateway at baseURL
// ("http://host:port"), with basic credentials when username is set.
func NewHTTP(baseURL, username, password string) (Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("URL %q is not http(s)://host[:port]", baseURL)
	}
	return &httpClient{
		base:     strings.TrimSuffix(baseURL, "/"),
		username: username,
		password: password,
		http:     &http.Client{},
	}, nil
}

// ListRepositories implements Client.
func (c *httpClient) ListRepositories(
	ctx context.Context, in *manifestv1.QueryServiceListRepositoriesRequest,
) (*manifestv1.QueryServiceListRepositoriesResponse, error) {
	out := &manifestv1.QueryServiceListRepositoriesResponse{}
	return out, c.get(ctx, "/api/v1/repositories", pageQuery(in.GetPageSize(),
		in.GetPageToken()), out)
}

// ListTags implements Client.
func (c *httpClient) ListTags(
	ctx context.Context, in *manifestv1.QueryServiceListTagsRequest,
) (*manifestv1.QueryServiceListTagsResponse, error) {
	out := &manifestv1.QueryServiceListTagsResponse{}
	return out, c.get(ctx, "/api/v1/tags/"+escapeName(in.GetRepository()),
		pageQuery(in.GetPageSize(), in.GetPageToken()), out)
}

// ResolveReference implements Client.
func (c *httpClient) ResolveReference(
	ctx context.Context, in *manifestv1.QueryServiceResolveReferenceRequest,
) (*manifestv1.QueryServiceResolveReferenceResponse, error) {
	out := &manifestv1.QueryServiceResolveReferenceResponse{}
	return out, c.get(ctx, "/api/v1/resolve/"+escapeName(in.GetRepository())+"/"+
		url.PathEscape(in.GetReference()), nil, out)
}

// InspectManifest implements Client.
func (c *httpClient) InspectManifest(
	ctx context.Context, in *manifestv1.QueryServiceInspectManifestRequest,
) (*manifestv1.QueryServiceInspectManifestResponse, error) {
	out := &manifestv1.QueryServiceInspectManifestResponse{}
	return out, c.get(ctx, "/api/v1/manifests/"+escapeName(in.GetRepository())+"/"+
		url.PathEscape(in.GetReference()), nil, out)
}

// ListReferrers implements Client.
func (c *httpClient) ListReferrers(
	ctx context.Context, in *manifestv1.QueryServiceListReferrersRequest,
) (*manifestv1.QueryServiceListReferrersResponse, error) {
	q := url.Values{}
	if in.GetArtifactType() != "" {
		q.Set("artifactType", in.GetArtifactType())
	}
	out := &manifestv1.QueryServiceListReferrersResponse{}
	return out, c.get(ctx, "/api/v1/referrers/"+escapeName(in.GetRepository())+"/"+
		url.PathEscape(in.GetDigest()), q, out)
}

// maxStreamLine bounds one line of a streamed response.
const maxStreamLine = 1 << 20

// WatchChanges implements Client. The gateway streams one JSON object per
// line: {"result": response} or, last, {"error": status}.
func (c *httpClient) WatchChanges(
	ctx context.Context, in *manifestv1.QueryServiceWatchChangesRequest,
	fn func(*manifestv1.QueryServiceWatchChangesResponse) error,
) error {
	q := url.Values{}
	if in.GetCursor() != "" {
		q.Set("cursor", in.GetCursor())
	}
	if in.GetRepository() != "" {
		q.Set("repository", in.GetRepository())
	}
	body, err := c.open(ctx, "/api/v1/changes", q)
	if err != nil {
		return err
	}
	defer body.Close()

	lines := bufio.NewScanner(body)
	lines.Buffer(make([]byte, 0, 64<<10), maxStreamLine)
	for lines.Scan() {
		var line struct {
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if err := json.Unmarshal(lines.Bytes(), &line); err != nil {
			return fmt.Errorf("malformed line in the change stream: %w", err)
		}
		if line.Error != nil {
			return decodeStatus(line.Error, http.StatusInternalServerError)
		}
		resp := &manifestv1.QueryServiceWatchChangesResponse{}
		if err := unmarshal(line.Result, resp); err != nil {
			return err
		}
		if err := fn(resp); err != nil {
			return err
		}
	}
	if err := lines.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read the change stream: %w", err)
	}
	return nil
}

// Close implements Client.
func (c *httpClient) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// get fetches path with query and decodes the JSON answer into out.
func (c *httpClient) get(ctx context.Context, path string, q url.Values, out proto.Message) error {
	body, err := c.open(ctx, path, q)
	if err != nil {
		return err
	}
	defer body.Close()

	b, err := io.ReadAll(body)
	if err != nil {
		return fmt.Errorf("read the answer to %s: %w", path, err)
	}
	return unmarshal(b, out)
}

// open sends GET path with query and returns the body of a 200 answer;
// any other answer becomes its status error.
func (c *httpClient) open(ctx context.Context, path string, q url.Values) (io.ReadCloser, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if c.username != "" {
		req.SetBasicAuth(c.username, c.password)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxStreamLine))
	return nil, decodeStatus(b, resp.StatusCode)
}

// decodeStatus turns the gateway's JSON error body into a status error;
// a body that is not one (from a proxy in front, say) becomes an error
// with the HTTP status's gRPC code.
func decodeStatus(body []byte, httpStatus int) error {
	var st spb.Status
	if err := unmarshal(body, &st); err == nil && st.GetCode() != 0 {
		return status.ErrorProto(&st)
	}
	msg := strings.TrimSpace(string(bytes.ToValidUTF8(body, nil)))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return status.Error(httpCode(httpStatus), "HTTP "+strconv.Itoa(httpStatus)+": "+msg)
}

// httpCode is the gRPC code nearest an HTTP status.
func httpCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}

// unmarshal decodes the gateway's JSON, ignoring fields this client does
// not know yet.
func unmarshal(b []byte, out proto.Message) error {
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, out); err != nil {
		return fmt.Errorf("malformed answer: %w", err)
	}
	return nil
}

// pageQuery is the query string of a page request.
func pageQuery(size int32, token string) url.Values {
	q := url.Values{}
	if size != 0 {
		q.Set("pageSize", strconv.Itoa(int(size)))
	}
	if token != "" {
		q.Set("pageToken", token)
	}
	return q
}

// escapeName escapes each component of a repository name for a URL path,
// keeping the slashes between them.
func escapeName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
