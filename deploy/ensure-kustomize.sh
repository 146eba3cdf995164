#!/usr/bin/env bash
# The deployment tests render deploy/k8s with Kustomize. Build the pinned release from the Go module
# proxy into the project's cache folder once (about a minute on 2 cores), unless it is there already.
# Prints the binary's path.
set -euo pipefail
VERSION=v5.7.1
CACHE="${STREAM_APP_CACHE:-$HOME/.cache/stream-app}"
BIN="$CACHE/kustomize-$VERSION"
if [ ! -x "$BIN/kustomize" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "Go is needed once to build Kustomize $VERSION (sigs.k8s.io/kustomize/kustomize/v5); install Go and re-run" >&2
    exit 1
  fi
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$VERSION" >&2
fi
echo "$BIN/kustomize"
