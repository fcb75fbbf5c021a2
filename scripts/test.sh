#!/usr/bin/env bash
# Runs every test of the repository, the end-to-end suite included: the
# pinned client tools and the conformance suite are installed into .bin/
# first (scripts/install-tools.sh), and skopeo comes from Debian.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

scripts/install-tools.sh

if ! command -v skopeo >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing skopeo from Debian" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null
  else
    echo "test.sh: skopeo is missing and this is not root; install it" \
      "(apt-get install skopeo) or the skopeo end-to-end test is skipped" \
      "(and fails when CI is set)." >&2
  fi
fi

go test -count=1 -timeout 40m ./...
