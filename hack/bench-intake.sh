#!/usr/bin/env bash
# Benchmarks the relay's intake against Postfix on this machine, in one run:
# msg/s accepting ~5 KB messages from 20 concurrent sessions with fsync on
# (Postfix's smtp-source as load generator for the relay on a trusted
# network and for a throwaway Postfix instance), plus the relay with
# STARTTLS + AUTH PLAIN from a Go client with p50/p99 latency, then the
# HTTP API's JSON intake beside SMTP's with the ratio of the two.
#
# Usage: hack/bench-intake.sh [flags for test/bench/intake, e.g. -messages 50000]
# Needs root (Postfix's master starts as root), the Debian postfix
# package (installed by hack/install-test-deps.sh when missing) and, for the
# Postfix + OpenDKIM baseline, the Debian opendkim and opendkim-tools
# packages (installed below when missing; the benchmark runs its own
# opendkim in the foreground, never the package's service).
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

bash hack/install-test-deps.sh
if [ ! -x /usr/sbin/opendkim ] || ! command -v opendkim-genkey >/dev/null; then
	if [ "$(id -u)" != 0 ]; then
		echo "bench-intake: missing opendkim/opendkim-tools and not root; install them with apt-get" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends opendkim opendkim-tools >/dev/null
	# The package may start its daemon on install; the benchmark runs its own.
	(service opendkim stop || true) >/dev/null 2>&1
fi
mkdir -p bin
go build -o bin/relay ./cmd/relay
go build -o bin/bench-intake ./test/bench/intake
go build -o bin/bench-api ./test/bench/api
bin/bench-intake -relay bin/relay "$@"
# The HTTP send API beside SMTP intake on one relay (test/bench/api): both
# figures and the API's ratio to SMTP.
exec bin/bench-api -relay bin/relay
