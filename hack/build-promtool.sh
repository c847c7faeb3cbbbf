#!/usr/bin/env bash
# Builds promtool from the Go module proxy for the alert rule tests (make
# test-alerts). An existing binary is not rebuilt. The module pinning the
# version is hack/tools/promtool (its go.sum is committed); Prometheus
# publishes v3.X.Y as module version v0.3XX.Y.
#
#   hack/build-promtool.sh      bin/promtool/v0.316.0/promtool
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools=$root/hack/tools/promtool
PROMETHEUS_MODULE_VERSION=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
out=$root/bin/promtool/$PROMETHEUS_MODULE_VERSION
bin=$out/promtool
if [ -x "$bin" ]; then exit 0; fi

pinned=$(cd "$tools" && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
if [ "$pinned" != "$PROMETHEUS_MODULE_VERSION" ]; then
	echo "build-promtool: hack/tools/promtool pins $pinned, not $PROMETHEUS_MODULE_VERSION" >&2
	exit 2
fi

mkdir -p "$out"
start=$(date +%s)
export CGO_ENABLED=0
ldflags="-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_MODULE_VERSION"
# Without remove_all_sd promtool links every service discovery SDK; rule
# tests need none of them.
(cd "$tools" && go build -tags remove_all_sd -trimpath -ldflags "$ldflags" -o "$bin.tmp" github.com/prometheus/prometheus/cmd/promtool)
mv "$bin.tmp" "$bin"
echo "build-promtool: built promtool $PROMETHEUS_MODULE_VERSION in $(($(date +%s) - start))s -> $bin"
