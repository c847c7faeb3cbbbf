#!/usr/bin/env bash
# Builds external-dns from the Go module proxy for the end-to-end tests and
# the demo. An existing binary is not rebuilt. The module pinning the version
# is hack/tools/external-dns (its go.sum is committed).
#
#   hack/build-external-dns.sh          the release as published:
#                                       bin/external-dns/v0.21.0/external-dns
#   hack/build-external-dns.sh patched  the release plus the fixes in
#                                       hack/tools/external-dns/patches (TXT
#                                       records can be updated and deleted):
#                                       bin/external-dns/v0.21.0-mailroom.1/external-dns
#
# docs/external-dns.md explains why the patches exist.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/hack/tools/external-dns
EXTERNAL_DNS_VERSION=${EXTERNAL_DNS_VERSION:-v0.21.0}
# Bump the suffix whenever hack/tools/external-dns/patches changes, so a
# stale patched binary is never reused.
PATCH_LEVEL=mailroom.1
variant=${1:-stock}

case $variant in
stock) version=$EXTERNAL_DNS_VERSION ;;
patched) version=$EXTERNAL_DNS_VERSION-$PATCH_LEVEL ;;
*)
	echo "build-external-dns: unknown variant $variant (stock or patched)" >&2
	exit 2
	;;
esac
out=$root/bin/external-dns/$version
bin=$out/external-dns
if [ -x "$bin" ]; then exit 0; fi

pinned=$(cd "$tools" && go list -m -f '{{.Version}}' sigs.k8s.io/external-dns)
if [ "$pinned" != "$EXTERNAL_DNS_VERSION" ]; then
	echo "build-external-dns: hack/tools/external-dns pins $pinned, not $EXTERNAL_DNS_VERSION" >&2
	exit 2
fi

mkdir -p "$out"
start=$(date +%s)
export CGO_ENABLED=0
# The version stamp is what external-dns logs at start-up.
ldflags="-s -w -X sigs.k8s.io/external-dns/pkg/apis/externaldns.Version=$version"

if [ "$variant" = stock ]; then
	(cd "$tools" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" sigs.k8s.io/external-dns)
else
	# Patch a copy of the module source and build the same wrapper module
	# against it through an alternate go.mod, leaving the committed one as
	# it is.
	src=$root/bin/external-dns/src/$version
	moddir=$(cd "$tools" && go mod download sigs.k8s.io/external-dns && go list -m -f '{{.Dir}}' sigs.k8s.io/external-dns)
	rm -rf "$src"
	mkdir -p "$(dirname "$src")"
	cp -R "$moddir" "$src"
	chmod -R u+w "$src"
	for p in "$tools"/patches/*.patch; do
		patch -s -p1 -d "$src" <"$p"
	done
	work=$(mktemp -d)
	trap 'rm -rf "$work"' EXIT
	cp "$tools/go.mod" "$work/go.mod"
	cp "$tools/go.sum" "$work/go.sum"
	go mod edit -modfile="$work/go.mod" \
		-replace "sigs.k8s.io/external-dns=$src" \
		-replace "vbom.ml/util=$root/hack/stubs/vbom-util"
	(cd "$tools" && go build -mod=mod -modfile="$work/go.mod" -trimpath -ldflags "$ldflags" -o "$bin.tmp" sigs.k8s.io/external-dns)
fi
mv "$bin.tmp" "$bin"
echo "build-external-dns: built external-dns $version in $(($(date +%s) - start))s -> $bin"
