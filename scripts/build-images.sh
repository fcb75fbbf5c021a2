#!/usr/bin/env bash
# Builds the keel container image: one static binary, /keel, in an image
# FROM scratch, so that building pulls nothing from any registry.
#
# Usage: scripts/build-images.sh [tag]    (default: $KEEL_IMAGE, else keel:dev)
#
# Every concern (gateway, auth, upload, manifest, s3) runs from this one
# image and picks its role with KEEL_TARGET. One tag rather than one per
# concern: the bytes are identical, so more tags would only add names to
# keep in step, push and clean up.
#
# The image holds:
#   /keel                              the binary; "keel health ..." is its
#                                      health check (there is no shell)
#   /etc/ssl/certs/ca-certificates.crt the build host's CA bundle, for R2 and
#                                      any other S3 endpoint over HTTPS
#   /data                              owned by the runtime user, for the s3
#                                      target's files (mount a volume here)
#   /tmp                               a writable scratch folder
# and runs as the unprivileged numeric user 65532:65532.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-${KEEL_IMAGE:-keel:dev}}"
uid=65532
certs=/etc/ssl/certs/ca-certificates.crt

if [[ ! -r "$certs" ]]; then
  echo "build-images: $certs is missing; install the ca-certificates package" >&2
  exit 1
fi

ctx="$(mktemp -d "${TMPDIR:-/tmp}/keel-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT

echo "build-images: building static binary"
(
  cd "$root"
  CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags='-s -w' -o "$ctx/keel" ./cmd/keel
)

mkdir -p "$ctx/data" "$ctx/tmp" "$ctx/certs"
chmod 0755 "$ctx/data"
chmod 1777 "$ctx/tmp"
cp "$certs" "$ctx/certs/ca-certificates.crt"

cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY tmp /tmp
COPY --chown=$uid:$uid data /data
COPY keel /keel
USER $uid:$uid
WORKDIR /data
ENV KEEL_DATA_DIR=/data
EXPOSE 5000 9000 9001 9002 9003
ENTRYPOINT ["/keel"]
EOF

echo "build-images: building image $tag"
# The legacy builder is asked for explicitly: it needs no buildx plugin, and
# FROM scratch pulls nothing with either builder.
DOCKER_BUILDKIT=0 docker build --quiet --tag "$tag" "$ctx" >/dev/null
echo "build-images: built $tag"
