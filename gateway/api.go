package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// routeAPI is the query API's JSON face: every path under it goes to the
// grpc-gateway mux, which routes it to a QueryService call.
const routeAPI route = "/api/v1/"

// The query API has the registry API's access rules: listing repositories
// or watching every repository needs the catalog scope, and everything
// about one repository needs pull on it. The mux decodes a request into its
// QueryService message first, and queryAuthorizer checks the access the
// message asks for, with the gateway's authorize, before calling the
// service. A call's gateway state reaches it through the request context.

// apiCall is the gateway's state of one API request.
type apiCall struct {
	req *request
	// err is the call's failure, for the request's log line.
	err error
	// end cancels the request, with errStopping when the gateway stops.
	end context.CancelCauseFunc
}

// StreamEnder is implemented by the handler New returns. Its EndStreams
// ends the query API's open streams (WatchChanges), which never end on
// their own, with UNAVAILABLE; their clients reconnect with their last
// cursor. Call it when the HTTP server starts shutting down
// (http.Server.RegisterOnShutdown), so that the shutdown need not wait for
// them. Streams opened afterwards are refused the same way.
type StreamEnder interface {
	EndStreams()
}

// errStopping ends the streams of a stopping gateway.
var errStopping = status.Error(codes.Unavailable,
	"the gateway is stopping; watch again from your last cursor")

// queryAPI is the query API's JSON face: the mux, and the streams open
// through it.
type queryAPI struct {
	mux *runtime.ServeMux

	mu      sync.Mutex
	ended   bool
	streams map[*apiCall]bool
}

// track records call as an open stream; it reports false once the
// streams have been ended.
func (a *queryAPI) track(call *apiCall) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ended {
		return false
	}
	a.streams[call] = true
	return true
}

// untrack forgets call.
func (a *queryAPI) untrack(call *apiCall) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.streams, call)
}

// EndStreams implements StreamEnder.
func (g *gateway) EndStreams() {
	if g.api == nil {
		return
	}
	g.api.mu.Lock()
	defer g.api.mu.Unlock()
	g.api.ended = true
	for call := range g.api.streams {
		call.end(errStopping)
	}
}

// stoppingCause is errStopping when the gateway's stop ended the request
// of ctx, and err otherwise.
func stoppingCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStopping) {
		return cause
	}
	return err
}

// apiCallKey is the context key of the apiCall.
type apiCallKey struct{}

// callOf returns the apiCall ctx carries, or nil.
func callOf(ctx context.Context) *apiCall {
	call, _ := ctx.Value(apiCallKey{}).(*apiCall)
	return call
}

// newAPI returns the mux that serves query over JSON, or nil when there is
// no query client. Neither request headers nor the service's metadata are
// forwarded: the service needs no credentials, and its metadata is of no
// use to clients.
func (g *gateway) newAPI(query manifestv1.QueryServiceClient) *queryAPI {
	if query == nil {
		return nil
	}
	forwardNothing := func(string) (string, bool) { return "", false }
	mux := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(forwardNothing),
		runtime.WithOutgoingHeaderMatcher(forwardNothing),
		runtime.WithOutgoingTrailerMatcher(forwardNothing),
		runtime.WithErrorHandler(g.writeAPIError),
		runtime.WithStreamErrorHandler(streamError),
	)
	err := manifestv1.RegisterQueryServiceHandlerClient(context.Background(), mux,
		&queryAuthorizer{g: g, next: query})
	if err != nil {
		// Registering a client only adds routes to the mux.
		panic(fmt.Sprintf("gateway: register the query API: %v", err))
	}
	return &queryAPI{mux: mux, streams: map[*apiCall]bool{}}
}

// serveAPI answers a request under /api/v1/. The mux writes the response,
// errors included; the error returned is only for the log line.
func (g *gateway) serveAPI(w http.ResponseWriter, req *request) error {
	if g.api == nil {
		return errNoRoute
	}
	ctx, end := context.WithCancelCause(req.Context())
	defer end(nil)
	call := &apiCall{req: req, end: end}
	defer g.api.untrack(call)

	ctx = context.WithValue(ctx, apiCallKey{}, call)
	g.api.mux.ServeHTTP(w, req.Request.WithContext(ctx))
	return call.err
}

// writeAPIError answers an API request with err in grpc-gateway's error
// shape, a google.rpc.Status as JSON, with the HTTP status of its gRPC
// code. Like the OCI routes, it asks an anonymous caller to authenticate.
//
// Shortcoming: with the token flow on, the Bearer challenge's scope comes
// from the gateway's OCI routes, which know pull on a repository but not
// the catalog scope the API's repository list and unfiltered watch need;
// a client that asks the token endpoint for exactly the challenged scope
// gets a token without it and a second 401, and must know to ask for
// registry:catalog:* itself.
func (g *gateway) writeAPIError(
	ctx context.Context, _ *runtime.ServeMux, marshaler runtime.Marshaler,
	w http.ResponseWriter, _ *http.Request, err error,
) {
	err = stoppingCause(ctx, err)
	st := clientStatus(err)
	call := callOf(ctx)
	if call != nil {
		call.err = logError(err, st)
	}

	body, merr := marshaler.Marshal(st.Proto())
	if merr != nil {
		st = status.New(codes.Internal, "internal error")
		body = []byte(`{"code":13,"message":"internal error","details":[]}`)
	}
	w.Header().Set("Content-Type", marshaler.ContentType(st.Proto()))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if st.Code() == codes.Unauthenticated && call != nil {
		w.Header().Set("WWW-Authenticate", g.challenge(call.req, err))
	}
	w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
	w.Write(body)
}

// streamError turns an error in the middle of a streamed response into the
// status sent as the stream's last line, and keeps it for the log line.
func streamError(ctx context.Context, err error) *status.Status {
	err = stoppingCause(ctx, err)
	st := clientStatus(err)
	if call := callOf(ctx); call != nil {
		call.err = logError(err, st)
	}
	return st
}

// clientStatus is what a client is told about err: its gRPC status, but
// with a generic message for failures that are not the client's, whose
// message may name internal addresses.
func clientStatus(err error) *status.Status {
	if errors.Is(err, errStopping) {
		return status.Convert(errStopping)
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unknown, codes.Internal, codes.DataLoss:
		return status.New(codes.Internal, "internal error")
	case codes.Unavailable, codes.DeadlineExceeded:
		return status.New(codes.Unavailable, "service unavailable")
	}
	return st
}

// logError is err as the request's log line shows it: as is when it
// carries an OCI code, and otherwise as UNKNOWN with the HTTP status the
// client got, so that a bad page token is not logged as a server error.
func logError(err error, sent *status.Status) error {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ocierr.Domain {
			return err
		}
	}
	e := &ocierr.Error{Code: ocierr.Unknown, Message: sent.Message(),
		Status: runtime.HTTPStatusFromCode(sent.Code())}
	return fmt.Errorf("%w: %v", e, err)
}

// queryAuthorizer is the QueryService client the mux calls: it checks each
// call's access, then passes it on.
type queryAuthorizer struct {
	g    *gateway
	next manifestv1.QueryServiceClient
}

// allow fails unless the caller of the API request in ctx may take the
// action want. The request's log line gets the call's URL template as its
// route and repo, when set, as its repository.
func (a *queryAuthorizer) allow(ctx context.Context, repo string, want scope) error {
	call := callOf(ctx)
	if call == nil {
		return ocierr.New(ocierr.Unknown, "query API call outside a gateway request")
	}
	if pattern, ok := runtime.HTTPPathPattern(ctx); ok {
		call.req.route = route(pattern)
	}
	call.req.name = repo
	return a.g.authorize(call.req, want)
}

// pull fails unless repo is a valid name the caller may pull from.
func (a *queryAuthorizer) pull(ctx context.Context, repo string) error {
	if err := reference.ValidateName(repo); err != nil {
		return err
	}
	return a.allow(ctx, repo, repositoryScope(repo, actionPull))
}

// ListRepositories needs the catalog scope.
func (a *queryAuthorizer) ListRepositories(
	ctx context.Context, in *manifestv1.QueryServiceListRepositoriesRequest,
	opts ...grpc.CallOption,
) (*manifestv1.QueryServiceListRepositoriesResponse, error) {
	if err := a.allow(ctx, "", catalogScope); err != nil {
		return nil, err
	}
	return a.next.ListRepositories(ctx, in, opts...)
}

// ListTags needs pull on the repository.
func (a *queryAuthorizer) ListTags(
	ctx context.Context, in *manifestv1.QueryServiceListTagsRequest, opts ...grpc.CallOption,
) (*manifestv1.QueryServiceListTagsResponse, error) {
	if err := a.pull(ctx, in.GetRepository()); err != nil {
		return nil, err
	}
	return a.next.ListTags(ctx, in, opts...)
}

// ResolveReference needs pull on the repository.
func (a *queryAuthorizer) ResolveReference(
	ctx context.Context, in *manifestv1.QueryServiceResolveReferenceRequest,
	opts ...grpc.CallOption,
) (*manifestv1.QueryServiceResolveReferenceResponse, error) {
	if err := a.pull(ctx, in.GetRepository()); err != nil {
		return nil, err
	}
	return a.next.ResolveReference(ctx, in, opts...)
}

// InspectManifest needs pull on the repository.
func (a *queryAuthorizer) InspectManifest(
	ctx context.Context, in *manifestv1.QueryServiceInspectManifestRequest,
	opts ...grpc.CallOption,
) (*manifestv1.QueryServiceInspectManifestResponse, error) {
	if err := a.pull(ctx, in.GetRepository()); err != nil {
		return nil, err
	}
	return a.next.InspectManifest(ctx, in, opts...)
}

// ListReferrers needs pull on the repository.
func (a *queryAuthorizer) ListReferrers(
	ctx context.Context, in *manifestv1.QueryServiceListReferrersRequest,
	opts ...grpc.CallOption,
) (*manifestv1.QueryServiceListReferrersResponse, error) {
	if err := a.pull(ctx, in.GetRepository()); err != nil {
		return nil, err
	}
	return a.next.ListReferrers(ctx, in, opts...)
}

// WatchChanges needs pull on the repository it names or, to watch every
// repository, the catalog scope. Watching every repository, the caller is
// sent only the changes of repositories it may pull from; the others
// become bookmarks, so that its cursor still moves past them.
func (a *queryAuthorizer) WatchChanges(
	ctx context.Context, in *manifestv1.QueryServiceWatchChangesRequest,
	opts ...grpc.CallOption,
) (grpc.ServerStreamingClient[manifestv1.QueryServiceWatchChangesResponse], error) {
	repo := in.GetRepository()
	if repo != "" {
		if err := a.pull(ctx, repo); err != nil {
			return nil, err
		}
		return a.open(ctx, in, opts, false)
	}

	if err := a.allow(ctx, "", catalogScope); err != nil {
		return nil, err
	}
	return a.open(ctx, in, opts, true)
}

// open opens the stream, which ends when the gateway stops; filtered, it
// hides the changes of repositories the caller may not pull from.
func (a *queryAuthorizer) open(
	ctx context.Context, in *manifestv1.QueryServiceWatchChangesRequest,
	opts []grpc.CallOption, filtered bool,
) (grpc.ServerStreamingClient[manifestv1.QueryServiceWatchChangesResponse], error) {
	call := callOf(ctx)
	if !a.g.api.track(call) {
		return nil, errStopping
	}
	stream, err := a.next.WatchChanges(ctx, in, opts...)
	if err != nil || !filtered {
		return stream, err
	}
	return &pullableChanges{ServerStreamingClient: stream, call: call, g: a.g}, nil
}

// pullableChanges is a change stream that turns the changes of
// repositories the caller may not pull from into bookmarks.
type pullableChanges struct {
	grpc.ServerStreamingClient[manifestv1.QueryServiceWatchChangesResponse]
	call *apiCall
	g    *gateway
}

// Recv returns the next response, or a bookmark in its place. An error
// from the auth service ends the stream rather than hide a change.
func (p *pullableChanges) Recv() (*manifestv1.QueryServiceWatchChangesResponse, error) {
	resp, err := p.ServerStreamingClient.Recv()
	if err != nil || resp.GetChange() == nil {
		return resp, err
	}

	repo := resp.GetChange().GetRepository()
	err = p.g.authorize(p.call.req, repositoryScope(repo, actionPull))
	switch {
	case err == nil:
		return resp, nil
	case ocierr.Is(err, ocierr.Denied) || ocierr.Is(err, ocierr.Unauthorized):
		return &manifestv1.QueryServiceWatchChangesResponse{Cursor: resp.GetCursor()}, nil
	}
	return nil, err
}
