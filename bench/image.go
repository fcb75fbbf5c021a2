package bench

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// randomLayers returns layers of pseudo-random bytes of the given sizes.
func randomLayers(seed uint64, sizes []int64) ([]v1.Layer, error) {
	layers := make([]v1.Layer, len(sizes))
	for i, n := range sizes {
		b := make([]byte, n)
		if _, err := io.ReadFull(randomReader(seed+uint64(i), n), b); err != nil {
			return nil, err
		}
		layers[i] = static.NewLayer(b, types.OCILayer)
	}
	return layers, nil
}

// imageOf builds an OCI image from layers.
func imageOf(layers []v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return mutate.AppendLayers(img, layers...)
}

// remoteOptions are the client options for both registries alike.
func remoteOptions(ctx context.Context, t Target, tr http.RoundTripper) []remote.Option {
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(&authn.Basic{Username: t.Username, Password: t.Password}),
		remote.WithTransport(tr),
		remote.WithJobs(4),
	}
}

// PushImage pushes img to t as repo:tag.
func PushImage(
	ctx context.Context, tr http.RoundTripper, t Target, repo, tag string, img v1.Image,
) error {
	ref, err := name.NewTag(t.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, img, remoteOptions(ctx, t, tr)...); err != nil {
		return fmt.Errorf("push %s to %s: %w", ref, t.Name, err)
	}
	return nil
}

// PullImage pulls repo:tag from t, reading and verifying every layer, and
// returns the bytes read.
func PullImage(
	ctx context.Context, tr http.RoundTripper, t Target, repo, tag string,
) (int64, error) {
	ref, err := name.NewTag(t.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return 0, err
	}
	img, err := remote.Image(ref, remoteOptions(ctx, t, tr)...)
	if err != nil {
		return 0, fmt.Errorf("pull %s from %s: %w", ref, t.Name, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return total, err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		total += n
		if err != nil {
			return total, fmt.Errorf("read layer from %s: %w", t.Name, err)
		}
	}
	return total, nil
}

// spreadSizes returns n sizes spread between lo and hi bytes.
func spreadSizes(seed uint64, n int, lo, hi int64) []int64 {
	r := rand.New(rand.NewPCG(seed, 7))
	sizes := make([]int64, n)
	for i := range sizes {
		sizes[i] = lo + r.Int64N(hi-lo+1)
	}
	return sizes
}
