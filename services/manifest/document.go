package manifest

import (
	"bytes"
	"encoding/json"
	"mime"
	"strings"

	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// The manifest media types the service reads.
const (
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// kind says how the service reads a manifest.
type kind int

const (
	// kindOpaque is a media type the service does not know. The
	// distribution spec is agnostic of content types, so such a manifest is
	// stored as pushed, but its references are not checked and its subject,
	// if any, is not filed as a referrer.
	kindOpaque kind = iota
	// kindImage is an OCI image manifest or a Docker schema 2 manifest: a
	// config and layers, all blobs.
	kindImage
	// kindIndex is an OCI image index or a Docker manifest list: a list of
	// manifests.
	kindIndex
)

// kinds maps each known media type to its kind.
var kinds = map[string]kind{
	mediaTypeOCIManifest:    kindImage,
	mediaTypeDockerManifest: kindImage,
	mediaTypeOCIIndex:       kindIndex,
	mediaTypeDockerList:     kindIndex,
}

// descriptor is an OCI content descriptor, as far as the service reads
// one from a manifest or writes one for a referrer.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	URLs         []string          `json:"urls,omitempty"`
}

// foreign reports whether a layer is one a registry is not expected to
// hold: a non-distributable (Docker: foreign) layer, or one that names
// URLs to fetch it from instead.
func (d descriptor) foreign() bool {
	return len(d.URLs) > 0 ||
		strings.HasPrefix(d.MediaType, "application/vnd.oci.image.layer.nondistributable.") ||
		strings.HasPrefix(d.MediaType, "application/vnd.docker.image.rootfs.foreign.")
}

// document is the union of the fields of an image manifest and an index.
// Which fields may be set depends on the kind.
type document struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptor       `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Manifests     []descriptor      `json:"manifests"`
	Subject       *descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// parsed is what the service learned from a pushed manifest.
type parsed struct {
	mediaType string
	kind      kind
	// doc is the decoded manifest; zero for kindOpaque.
	doc document
}

// parse validates a pushed manifest and decodes what the service needs
// from it. contentType is the Content-Type the client sent.
func parse(contentType string, content []byte) (*parsed, error) {
	trimmed := bytes.TrimLeft(content, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(content) {
		return nil, ocierr.New(ocierr.ManifestInvalid, "manifest is not a JSON object")
	}

	var head struct {
		MediaType string `json:"mediaType"`
	}
	if err := json.Unmarshal(content, &head); err != nil {
		return nil, ocierr.New(ocierr.ManifestInvalid, "manifest mediaType is not a string")
	}
	mediaType, err := resolveMediaType(contentType, head.MediaType)
	if err != nil {
		return nil, err
	}

	p := &parsed{mediaType: mediaType, kind: kinds[mediaType]}
	if p.kind == kindOpaque {
		return p, nil
	}
	if err := json.Unmarshal(content, &p.doc); err != nil {
		return nil, ocierr.New(ocierr.ManifestInvalid, "malformed %s: %v", mediaType, err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// resolveMediaType picks a manifest's media type from the Content-Type
// header and the manifest's own mediaType field, which must agree when both
// are present.
func resolveMediaType(contentType, field string) (string, error) {
	var header string
	if contentType != "" {
		mt, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return "", ocierr.New(ocierr.ManifestInvalid,
				"malformed Content-Type %.80q", contentType)
		}
		header = mt
	}
	if header != "" && field != "" && !strings.EqualFold(header, field) {
		return "", ocierr.New(ocierr.ManifestInvalid,
			"Content-Type %.80q does not match the manifest's mediaType %.80q", header, field)
	}

	mediaType := header
	if mediaType == "" {
		mediaType = field
	}
	if mediaType == "" {
		return "", ocierr.New(ocierr.ManifestInvalid,
			"manifest media type unknown: send a Content-Type or a mediaType field")
	}
	mt, params, err := mime.ParseMediaType(mediaType)
	if err != nil || len(params) > 0 || len(mt) > maxMediaTypeLen {
		return "", ocierr.New(ocierr.ManifestInvalid, "malformed media type %.80q", mediaType)
	}
	return mt, nil
}

// validate checks the fields of a known kind. Rejecting an image manifest
// that also carries "manifests", or an index that carries "config" or
// "layers", keeps one document from being read as two different things by
// different clients (the ambiguity behind CVE-2021-41190).
func (p *parsed) validate() error {
	d := &p.doc
	if d.SchemaVersion != 2 {
		return ocierr.New(ocierr.ManifestInvalid, "schemaVersion must be 2")
	}
	switch p.kind {
	case kindImage:
		if d.Manifests != nil {
			return ocierr.New(ocierr.ManifestInvalid, "an image manifest has no manifests")
		}
		if d.Config == nil {
			return ocierr.New(ocierr.ManifestInvalid, "an image manifest needs a config")
		}
		if err := checkDescriptor("config", *d.Config); err != nil {
			return err
		}
		for _, l := range d.Layers {
			if err := checkDescriptor("layer", l); err != nil {
				return err
			}
		}
	case kindIndex:
		if d.Config != nil || d.Layers != nil {
			return ocierr.New(ocierr.ManifestInvalid, "an index has no config or layers")
		}
		for _, m := range d.Manifests {
			if err := checkDescriptor("manifest", m); err != nil {
				return err
			}
		}
	}
	if d.Subject != nil {
		return checkDescriptor("subject", *d.Subject)
	}
	return nil
}

// checkDescriptor checks a descriptor's digest and size; role names it in
// the error.
func checkDescriptor(role string, d descriptor) error {
	if _, err := reference.ParseDigest(d.Digest); err != nil {
		return ocierr.New(ocierr.ManifestInvalid, "%s digest %.80q is malformed or unsupported",
			role, d.Digest)
	}
	if d.Size < 0 {
		return ocierr.New(ocierr.ManifestInvalid, "%s %s has a negative size", role, d.Digest)
	}
	return nil
}

// blobs returns the descriptors of the blobs an image manifest references
// and the registry must hold: its config, then its layers but the foreign
// ones. It is empty for other kinds.
func (p *parsed) blobs() []descriptor {
	if p.kind != kindImage {
		return nil
	}
	blobs := []descriptor{*p.doc.Config}
	for _, l := range p.doc.Layers {
		if !l.foreign() {
			blobs = append(blobs, l)
		}
	}
	return blobs
}

// children returns the descriptors of the manifests an index lists. It is
// empty for other kinds.
func (p *parsed) children() []descriptor {
	if p.kind != kindIndex {
		return nil
	}
	return p.doc.Manifests
}

// subject returns the digest of the manifest's subject, if it has one.
func (p *parsed) subject() (reference.Digest, bool) {
	if p.doc.Subject == nil {
		return "", false
	}
	return reference.Digest(p.doc.Subject.Digest), true
}

// referrer returns the descriptor that lists this manifest among its
// subject's referrers. Its artifactType is the manifest's artifactType or,
// for an image manifest without one, the config's media type, as the
// referrers API requires; its annotations are the manifest's.
func (p *parsed) referrer(dgst reference.Digest, size int64) descriptor {
	artifactType := p.doc.ArtifactType
	if artifactType == "" && p.kind == kindImage {
		artifactType = p.doc.Config.MediaType
	}
	return descriptor{
		MediaType:    p.mediaType,
		Digest:       dgst.String(),
		Size:         size,
		ArtifactType: artifactType,
		Annotations:  p.doc.Annotations,
	}
}

// isManifestType reports whether mediaType is a manifest media type the
// service knows.
func isManifestType(mediaType string) bool {
	_, ok := kinds[mediaType]
	return ok
}
