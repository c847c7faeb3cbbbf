#!/usr/bin/env bash
# Builds the Kubernetes and etcd binaries mailroom's tests run, from the Go
# module proxy, into bin/k8s/<k8s-version>/ (one folder per version, so a
# version bump never reuses stale binaries). A binary that is already there
# is not rebuilt.
#
#   hack/build-k8s.sh                      envtest set: kube-apiserver, etcd
#   hack/build-k8s.sh all                  plus the node: kubelet, kube-proxy,
#                                          kube-controller-manager, kube-scheduler, kubectl
#   hack/build-k8s.sh kube-apiserver etcd  just these
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
out=${K8S_ASSETS_DIR:-$root/bin/k8s/$K8S_VERSION}
mkdir -p "$out"

want=("$@")
if [ ${#want[@]} -eq 0 ]; then want=(kube-apiserver etcd); fi
if [ "${want[0]}" = all ]; then
	want=(kube-apiserver etcd kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
fi

# Without these stamps the binaries report v0.0.0-master and kubectl's
# discovery cannot parse the server version.
major=${K8S_VERSION#v}; major=${major%%.*}
minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	stamp+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
	stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

export CGO_ENABLED=0 GOFLAGS=-mod=mod
for b in "${want[@]}"; do
	if [ -x "$out/$b" ]; then continue; fi
	start=$(date +%s)
	case $b in
	etcd)
		(cd "$root/hack/tools/etcd" &&
			go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
		;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl)
		(cd "$root/hack/tools/k8s" &&
			go build -trimpath -ldflags "-s -w $stamp" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b")
		;;
	*)
		echo "build-k8s: unknown binary $b" >&2
		exit 2
		;;
	esac
	mv "$out/$b.tmp" "$out/$b"
	echo "build-k8s: built $b in $(($(date +%s) - start))s -> $out/$b"
done
