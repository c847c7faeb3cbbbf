#!/usr/bin/env bash
# Benchmarks the relay end to end against Postfix on this machine, in one
# run (GitHub issue 5): smtp-source submits ~5 KB messages, each MTA looks
# up the recipient domain's MX on a loopback DNS server and delivers to
# Postfix's smtp-sink; msg/s from the first accept to the last 250 at the
# sink, the relay/Postfix ratio, and p50/p99 end-of-DATA -> delivered latency.
#
# Usage: hack/bench-delivery.sh [flags for test/bench/delivery, e.g. -messages 20000]
# Needs root (ports 25 and 53, Postfix's master, a private mount namespace
# for Postfix's resolv.conf) and the Debian postfix package (installed by
# hack/install-test-deps.sh when missing). Everything listens on 127.x.y.z.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-test-deps.sh
mkdir -p bin
go build -o bin/relay ./cmd/relay
go build -o bin/bench-delivery ./test/bench/delivery
go build -o bin/bench-webhook ./test/bench/webhook
bin/bench-delivery -relay bin/relay "$@"
# Then what delivery-event webhooks cost end to end (issue 13): the same
# relay with and without a webhook for every event type (same flags).
bin/bench-webhook -relay bin/relay "$@"
