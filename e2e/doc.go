// Package e2e proves the registry end to end: it builds cmd/keel, starts a
// stack of separate processes (embedded S3, auth, upload, manifest,
// gateway) on loopback ports, and drives it with the OCI conformance suite,
// real clients (crane, regctl, oras, skopeo) and hand-built bad requests.
//
// The package has tests only. The tools come from .bin/ (installed by
// scripts/install-tools.sh) and skopeo from PATH; a missing tool skips its
// test, or fails it when the CI environment variable is set.
package e2e
