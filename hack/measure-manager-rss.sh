#!/usr/bin/env bash
# Measures the manager's resident memory with 5,000 unrelated 4 KiB Secrets
# in the cluster (envtest's kube-apiserver), for this tree and, given a
# commit, for that commit too, so a change to what the manager caches can
# be judged by its figures.
#
#   hack/measure-manager-rss.sh              this tree
#   hack/measure-manager-rss.sh <commit>     that commit, then this tree
#
# MAILROOM_RSS_SECRETS changes the number of Secrets. The test behind it is
# TestManagerRSSWithUnrelatedSecrets in test/e2e.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
export KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS:-$root/bin/k8s/v1.37.2}
work=$(mktemp -d)
trap 'if [ -d "$work/old" ]; then git -C "$root" worktree remove --force "$work/old"; fi; rm -rf "$work"' EXIT

measure() { # label, manager binary
	echo "== $1"
	(cd "$root" && MAILROOM_MEASURE_RSS=1 MAILROOM_MANAGER_BIN=$2 \
		go test -count=1 -v -run '^TestManagerRSSWithUnrelatedSecrets$' -timeout 20m ./test/e2e/) | grep -E 'MANAGER_RSS_MIB|^(ok|FAIL|---)'
}

if [ $# -ge 1 ]; then
	git -C "$root" worktree add -q --detach "$work/old" "$1"
	(cd "$work/old" && CGO_ENABLED=0 go build -trimpath -o "$work/manager-old" ./cmd/manager)
	measure "$1" "$work/manager-old"
fi
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o "$work/manager-new" ./cmd/manager)
measure "this tree" "$work/manager-new"
