#!/usr/bin/env bash
# Installs the pinned tools that generation, lint and the end-to-end tests
# use into .bin/ (ignored by git). Each tool is built from its own module at a
# fixed version with `go install`, so CI and a newcomer get the same binaries.
# A tool already present at the pinned version is not rebuilt.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/.bin"
mkdir -p "$bin"

# module@version, one per line; the binary name is the last path element.
tools=(
  github.com/bufbuild/buf/cmd/buf@v1.75.0
  google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
  google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.34.0
  github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.34.0
  github.com/google/go-containerregistry/cmd/crane@v0.22.1
  github.com/regclient/regclient/cmd/regctl@v0.11.7
  oras.land/oras/cmd/oras@v1.3.6
  github.com/opencontainers/distribution-spec/conformance@v0.0.0-20260831232431-97274622c111
  # CNCF Distribution, the peer the benchmarks measure against.
  github.com/distribution/distribution/v3/cmd/registry@v3.1.2
)

want="${1:-all}"
for t in "${tools[@]}"; do
  mod="${t%@*}"
  ver="${t##*@}"
  name="${mod##*/}"
  if [[ "$want" != all && "$want" != *"$name"* ]]; then
    continue
  fi
  stamp="$bin/.$name.version"
  if [[ -x "$bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$ver" ]]; then
    continue
  fi
  echo "install-tools: $name $ver" >&2
  GOBIN="$bin" CGO_ENABLED=0 go install "$t"
  echo "$ver" >"$stamp"
done
