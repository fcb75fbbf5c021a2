package querycli

import (
	"context"
	"errors"
	"fmt"
	"strings"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
)

// runRepos lists repositories.
func runRepos(ctx context.Context, e *env, _ []string) error {
	names, next, err := collectPages(e.s, func(token string) ([]string, string, error) {
		resp, err := e.client.ListRepositories(ctx, &manifestv1.QueryServiceListRepositoriesRequest{
			PageSize: int32(e.s.pageSize), PageToken: token,
		})
		return resp.GetRepositories(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}

	if e.s.output == "json" {
		return writeJSON(e.stdout, &manifestv1.QueryServiceListRepositoriesResponse{
			Repositories: names, NextPageToken: next,
		}, true)
	}
	t := newTable(e.stdout, "REPOSITORY")
	for _, n := range names {
		t.row(n)
	}
	if err := t.flush(); err != nil {
		return err
	}
	e.morePages(next)
	return nil
}

// runTags lists a repository's tags.
func runTags(ctx context.Context, e *env, args []string) error {
	repo := args[0]
	tags, next, err := collectPages(e.s, func(token string) ([]string, string, error) {
		resp, err := e.client.ListTags(ctx, &manifestv1.QueryServiceListTagsRequest{
			Repository: repo, PageSize: int32(e.s.pageSize), PageToken: token,
		})
		return resp.GetTags(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return err
	}

	if e.s.output == "json" {
		return writeJSON(e.stdout, &manifestv1.QueryServiceListTagsResponse{
			Tags: tags, NextPageToken: next,
		}, true)
	}
	t := newTable(e.stdout, "TAG")
	for _, tag := range tags {
		t.row(tag)
	}
	if err := t.flush(); err != nil {
		return err
	}
	e.morePages(next)
	return nil
}

// maxPages bounds --all, against a server that never stops paging.
const maxPages = 100000

// collectPages fetches the page at the --page-token flag and, with --all,
// every page after it. It returns the entries and the token of the page
// after the last one fetched.
func collectPages(
	s *settings, fetch func(token string) ([]string, string, error),
) ([]string, string, error) {
	var out []string
	token := s.pageToken
	for range maxPages {
		entries, next, err := fetch(token)
		if err != nil {
			return nil, "", err
		}
		out = append(out, entries...)
		if !s.all || next == "" {
			return out, next, nil
		}
		token = next
	}
	return nil, "", fmt.Errorf("gave up after %d pages", maxPages)
}

// morePages tells the user, on stderr, how to get the page after a table.
func (e *env) morePages(next string) {
	if next != "" {
		fmt.Fprintf(e.stderr, "keelctl: more follow; run again with --page-token %s, "+
			"or with --all\n", next)
	}
}

// runInspect shows a manifest.
func runInspect(ctx context.Context, e *env, args []string) error {
	repo, ref, err := splitReference(args[0])
	if err != nil {
		return err
	}
	resp, err := e.client.InspectManifest(ctx, &manifestv1.QueryServiceInspectManifestRequest{
		Repository: repo, Reference: ref,
	})
	if err != nil {
		return err
	}

	if e.s.output == "json" {
		return writeJSON(e.stdout, resp.GetManifest(), true)
	}
	return printManifest(e.stdout, repo, resp.GetManifest())
}

// runReferrers lists a manifest's referrers. A tag is resolved to its
// digest first.
func runReferrers(ctx context.Context, e *env, args []string) error {
	repo, ref, err := splitReference(args[0])
	if err != nil {
		return err
	}
	if !strings.Contains(ref, ":") {
		res, err := e.client.ResolveReference(ctx, &manifestv1.QueryServiceResolveReferenceRequest{
			Repository: repo, Reference: ref,
		})
		if err != nil {
			return err
		}
		ref = res.GetDescriptor_().GetDigest()
	}
	resp, err := e.client.ListReferrers(ctx, &manifestv1.QueryServiceListReferrersRequest{
		Repository: repo, Digest: ref, ArtifactType: e.s.artifactType,
	})
	if err != nil {
		return err
	}

	if e.s.output == "json" {
		return writeJSON(e.stdout, resp, true)
	}
	t := newTable(e.stdout, "DIGEST", "ARTIFACT TYPE", "SIZE", "MEDIA TYPE")
	for _, d := range resp.GetReferrers() {
		t.row(d.GetDigest(), orDash(d.GetArtifactType()), d.GetSize(), d.GetMediaType())
	}
	return t.flush()
}

// runWatch prints changes as they come, until interrupted. When the stream
// ends, it says on stderr which cursor resumes it.
func runWatch(ctx context.Context, e *env, _ []string) error {
	req := &manifestv1.QueryServiceWatchChangesRequest{
		Cursor: e.s.since, Repository: e.s.repository,
	}
	cursor := e.s.since
	if e.s.output == "table" {
		if err := writeWatchHeader(e.stdout); err != nil {
			return err
		}
	}

	show := func(r *manifestv1.QueryServiceWatchChangesResponse) error {
		cursor = r.GetCursor()
		if r.GetChange() == nil {
			return nil
		}
		if e.s.output == "json" {
			return writeJSON(e.stdout, r, false)
		}
		return writeWatchRow(e.stdout, r)
	}
	err := e.client.WatchChanges(ctx, req, show)
	if ctx.Err() != nil {
		// Interrupted: the normal way to stop watching.
		return nil
	}
	if cursor != "" {
		fmt.Fprintf(e.stderr, "keelctl: the watch ended; resume with --since %s\n", cursor)
	}
	return err
}

// splitReference splits "repo:tag" or "repo@digest" ("repo" alone means
// the tag "latest", as docker has it).
func splitReference(s string) (repo, ref string, err error) {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		repo, ref = s[:i], s[i+1:]
	} else if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		repo, ref = s[:i], s[i+1:]
	} else {
		repo, ref = s, "latest"
	}
	if repo == "" || ref == "" {
		return "", "", usageError{errors.New("want <repo>:<tag> or <repo>@<digest>, got " +
			fmt.Sprintf("%q", s))}
	}
	return repo, ref, nil
}
