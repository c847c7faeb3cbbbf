#!/usr/bin/env bash
# make e2e: builds what the node needs (cached under bin/), brings a real
# single-node Kubernetes up, runs the end-to-end suites that use its
# harness (test/e2e/cluster) against it, and always tears it down and
# checks that nothing of it remains — also when a suite fails or the run
# is interrupted.
#
# Environment:
#   MAILROOM_CLUSTER_DIR  run folder (default tmp/e2e-cluster; kept with the
#                         component logs when something fails)
#   E2E_PACKAGES          suites to run (default: every package under
#                         test/e2e that imports the harness)
#   E2E_RUN               go test -run pattern
#   E2E_WAIT              how long to wait for another node on this machine
#                         to be torn down (default 15m), then refuse
#   E2E_REQUIRE           optional binaries the suites need (e.g. relay):
#                         the image build fails if they do not compile
set -euo pipefail
source "$(dirname "$0")/tool.sh"
cd "$root"

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
dir=${MAILROOM_CLUSTER_DIR:-$root/tmp/e2e-cluster}
images=$root/bin/images
harness=mailroom.io/mailroom/test/e2e/cluster
t0=$(date +%s)
phase() { echo "e2e: [$(($(date +%s) - t0))s] $*"; }

phase "node binaries (built once per version under bin/)"
K8S_VERSION=$K8S_VERSION ETCD_VERSION=$ETCD_VERSION hack/build-k8s.sh all
COREDNS_VERSION=$COREDNS_VERSION hack/cluster/build-coredns.sh
phase "images"
go run ./hack/images -out "$images" -coredns "bin/coredns/$COREDNS_VERSION/coredns" ${E2E_REQUIRE:+-require "$E2E_REQUIRE"}

pkgs=${E2E_PACKAGES:-$(go list -e -f '{{.ImportPath}}{{range .Imports}} {{.}}{{end}}{{range .TestImports}} {{.}}{{end}}{{range .XTestImports}} {{.}}{{end}}' ./test/e2e/... |
	awk -v h="$harness" '{ for (i = 1; i <= NF; i++) if ($i == h) { print $1; next } }')}
if [ -z "$pkgs" ]; then
	echo "e2e: no package under test/e2e imports $harness" >&2
	exit 1
fi
# Compile the suites before the node exists: a build error should not cost
# a bring-up, and the node's time is the suites' time.
go test -count=1 -run '^$' $pkgs

# up and the tests run in the background and are waited for, so a signal
# to this script alone (a CI timeout's SIGTERM) reaches the trap at once;
# the trap stops the tests, lets up finish (it undoes its own work when
# interrupted), and tears down the node only if this run's up created it.
up_pid="" test_pid=""
teardown() {
	local rc=$1
	trap - EXIT INT TERM HUP
	if [ -n "$test_pid" ] && kill -0 "$test_pid" 2>/dev/null; then
		phase "stopping the tests"
		pkill -TERM -P "$test_pid" 2>/dev/null || true
		kill -TERM "$test_pid" 2>/dev/null || true
		wait "$test_pid" 2>/dev/null || true
	fi
	if [ -n "$up_pid" ]; then
		wait "$up_pid" 2>/dev/null || true
		# Only a node this run claimed is torn down (a refused up claimed
		# nothing). The machine stays claimed until the leftovers check and
		# the run folder's removal are done, so another run waiting to
		# start cannot come up in between.
		if [ "$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' /run/mailroom-cluster/owner.json 2>/dev/null)" = "$$" ]; then
			if [ -e "$dir/state.json" ]; then
				phase "tearing the node down"
				"$cluster_tool" down -dir "$dir" -keep-claim || rc=1
			fi
			hack/cluster/check-clean -dir "$dir" -claimed || rc=1
			if [ "$rc" -eq 0 ]; then
				rm -rf "$dir"
			else
				echo "e2e: component logs kept in $dir/logs"
			fi
			"$cluster_tool" release -dir "$dir" || rc=1
		fi
	fi
	phase "done, exit status $rc"
	exit "$rc"
}
trap 'teardown $?' EXIT
trap 'exit 130' INT TERM HUP

phase "bringing the node up in $dir"
# -wait: on a shared machine another make e2e may hold the node for a while.
"$cluster_tool" up -dir "$dir" -k8s-bin "bin/k8s/$K8S_VERSION" -images "$images" -wait "${E2E_WAIT:-15m}" -holder-pid $$ &
up_pid=$!
status=0
wait "$up_pid" || status=$?
# Status 3: another node holds the machine (or was not torn down); it is
# not ours to touch. Any other failure: up has torn down what it started,
# the trap checks that.
[ "$status" -eq 0 ] || exit "$status"

phase "running $(echo $pkgs)"
MAILROOM_E2E_CLUSTER=$dir KUBECONFIG=$dir/admin.kubeconfig \
	go test -count=1 -timeout 30m -v ${E2E_RUN:+-run "$E2E_RUN"} $pkgs &
test_pid=$!
wait "$test_pid"
