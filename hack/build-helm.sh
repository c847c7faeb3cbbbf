#!/usr/bin/env bash
# Builds helm from the Go module proxy for the chart checks (make
# test-chart). An existing binary is not rebuilt. The module pinning the
# version is hack/tools/helm (its go.sum is committed).
#
#   hack/build-helm.sh      bin/helm/v3.22.0/helm
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/hack/tools/helm
HELM_VERSION=${HELM_VERSION:-v3.22.0}
out=$root/bin/helm/$HELM_VERSION
bin=$out/helm
if [ -x "$bin" ]; then exit 0; fi

pinned=$(cd "$tools" && go list -m -f '{{.Version}}' helm.sh/helm/v3)
if [ "$pinned" != "$HELM_VERSION" ]; then
	echo "build-helm: hack/tools/helm pins $pinned, not $HELM_VERSION" >&2
	exit 2
fi

mkdir -p "$out"
start=$(date +%s)
export CGO_ENABLED=0
# The version stamp is what `helm version` prints; helm lint checks the
# chart's kubeVersion against the Kubernetes version stamped here.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
(cd "$tools" && go build -trimpath -ldflags "$ldflags" -o "$bin.tmp" helm.sh/helm/v3/cmd/helm)
mv "$bin.tmp" "$bin"
echo "build-helm: built helm $HELM_VERSION in $(($(date +%s) - start))s -> $bin"
