#!/usr/bin/env bash
# Benchmarks the relay's spool as it grows (GitHub issue 10): with 10k,
# 100k and 1M messages of 5 KB queued and delivery paused, intake rate
# (ratio to the empty queue in the same run), per-event scheduling cost,
# RSS, restart-to-ready time and bytes on disk.
#
# Usage: hack/bench-queue.sh [flags for test/bench/queue, e.g. -levels 10000,100000]
# Needs the Debian postfix package for smtp-source (installed by
# hack/install-test-deps.sh when missing). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-test-deps.sh
mkdir -p bin
go build -o bin/relay ./cmd/relay
go build -o bin/bench-queue ./test/bench/queue
exec bin/bench-queue -relay bin/relay "$@"
