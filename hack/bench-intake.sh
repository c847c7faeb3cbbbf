#!/usr/bin/env bash
# Benchmarks the relay's intake against Postfix on this machine, in one run:
# msg/s accepting ~5 KB messages from 20 concurrent sessions with fsync on
# (Postfix's smtp-source as load generator for the relay on a trusted
# network and for a throwaway Postfix instance), plus the relay with
# STARTTLS + AUTH PLAIN from a Go client with p50/p99 latency.
#
# Usage: hack/bench-intake.sh [flags for test/bench/intake, e.g. -messages 50000]
# Needs root (Postfix's master starts as root) and the Debian postfix
# package (installed by hack/install-test-deps.sh when missing).
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-test-deps.sh
mkdir -p bin
go build -o bin/relay ./cmd/relay
go build -o bin/bench-intake ./test/bench/intake
exec bin/bench-intake -relay bin/relay "$@"
