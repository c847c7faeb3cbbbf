# Sourced by hack/cluster/up, down and e2e.sh: builds the cluster tool
# (go build is a no-op when nothing changed) and sets $cluster_tool.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster_tool=$root/bin/mailroom-cluster
(cd "$root" && go build -o "$cluster_tool" ./hack/cluster)
