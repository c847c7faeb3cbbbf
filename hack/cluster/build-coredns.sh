#!/usr/bin/env bash
# Builds CoreDNS, the local node's cluster DNS, from the Go module proxy into
# bin/coredns/<version>/coredns (a static binary, turned into an image by
# hack/images). An existing binary is not rebuilt. The version is pinned by
# the wrapper module hack/tools/coredns (its go.sum is committed), which keeps
# CoreDNS's dependency graph out of ours.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
out=${COREDNS_DIR:-$root/bin/coredns/$COREDNS_VERSION}
bin=$out/coredns

if [ -x "$bin" ]; then exit 0; fi

pinned=$(cd "$root/hack/tools/coredns" && go list -m -f '{{.Version}}' github.com/coredns/coredns)
if [ "$pinned" != "$COREDNS_VERSION" ]; then
	echo "build-coredns: hack/tools/coredns pins $pinned, not $COREDNS_VERSION" >&2
	exit 2
fi

mkdir -p "$out"
start=$(date +%s)
# GitCommit is what `coredns -version` prints beside the release number.
(cd "$root/hack/tools/coredns" &&
	CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
		-ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
		-o "$bin.tmp" github.com/coredns/coredns)
mv "$bin.tmp" "$bin"
echo "build-coredns: built coredns $COREDNS_VERSION in $(($(date +%s) - start))s -> $bin"
