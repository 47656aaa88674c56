#!/usr/bin/env bash
# The cluster test tier: the operator against a real control plane on loopback (etcd,
# kube-apiserver, kube-controller-manager from ../shared/k8s) with fakelet running trial and
# server pods as host processes, then the scenarios of tests/tests/cluster.rs against it.
#
#   scripts/test-cluster.sh [TEST_NAME_FILTER]
#
# Skips (exit 0, says so) when the kit is absent. Needs root (fakelet's per-container mount
# namespaces emulate the pods' /artifacts and /tmp volumes), openssl, xz, python3; installs etcd
# (apt, etcd-server) and helm + kubectl (scripts/install-k8s-tools.sh) when missing.
#   K8S_KIT=DIR           the kit (default ../shared/k8s relative to the repository root)
#   FLYWHEEL_CLUSTER_KEEP=1  leave the state folder (logs, kubeconfigs) behind after the run
set -euo pipefail
tier_start=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# shellcheck source=cluster/control-plane.sh
source scripts/cluster/control-plane.sh

if [ ! -f "$K8S_KIT/fakelet.py" ] || [ ! -f "$K8S_KIT/bin/kube-apiserver.xz" ]; then
  echo "test-cluster: SKIPPED the cluster tier: no control-plane kit at $K8S_KIT (set K8S_KIT)"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "test-cluster: the cluster tier needs root (fakelet mounts each pod's /artifacts and /tmp in a private mount namespace)" >&2
  exit 1
fi

scripts/install-k8s-tools.sh >/dev/null
export PATH="$root/.tools/k8s/bin:$PATH"

# Everything is compiled before the control plane starts, so no build runs while it is up.
cargo build --locked -p flywheel-operator --bin flywheel -p flywheel-trainer --bin flywheel-trainer \
  -p flywheel-server --bin flywheel-server
cargo test --locked -p flywheel-e2e --test cluster --no-run

CLUSTER_DIR="$(mktemp -d /tmp/flywheel-cluster.XXXXXX)"
export CLUSTER_DIR
teardown() {
  local status=$?
  cluster_down
  if [ "$status" -ne 0 ]; then
    echo "test-cluster: failed; component logs:" >&2
    for log in "$CLUSTER_DIR"/*.log; do
      echo "--- $log (last 30 lines)" >&2
      tail -n 30 "$log" >&2 || true
    done
  fi
  # The artifact folder holds files written by pods (as root); everything else is ours.
  if [ "${FLYWHEEL_CLUSTER_KEEP:-0}" = 1 ]; then
    echo "test-cluster: state kept in $CLUSTER_DIR" >&2
  else
    rm -rf "$CLUSTER_DIR"
  fi
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# The pods' artifact claim: /artifacts inside each pod (see cluster/pod-entrypoint.sh) is this
# folder; the host path itself only has to exist as a mount point.
mkdir -p "$CLUSTER_DIR/artifacts" /artifacts
trainer_image="ghcr.io/flywheel-ml/flywheel-trainer:cluster-test"
server_image="ghcr.io/flywheel-ml/flywheel-server:cluster-test"
ort="${ORT_DYLIB_PATH:-$root/.tools/onnxruntime/libonnxruntime.so}"
python3 - "$CLUSTER_DIR/images.json" <<PY
import json, sys
entry = "$root/scripts/cluster/pod-entrypoint.sh"
env = {"FLYWHEEL_TEST_ARTIFACTS": "$CLUSTER_DIR/artifacts", "ORT_DYLIB_PATH": "$ort"}
images = {
    "$trainer_image": {"entrypoint": [entry, "$root/target/debug/flywheel-trainer"], "env": env},
    "$server_image": {"entrypoint": [entry, "$root/target/debug/flywheel-server"], "env": env},
}
json.dump(images, open(sys.argv[1], "w"), indent=2)
PY

cluster_up "$CLUSTER_DIR/images.json"

# Install as a user would: the generated CRDs, then the chart's ServiceAccount and RBAC.
kubectl create namespace flywheel-system >/dev/null
kubectl apply -f crds/ 2>&1 | tee "$CLUSTER_DIR/crds-apply.txt"
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
helm template flywheel charts/flywheel --namespace flywheel-system \
  --show-only templates/serviceaccount.yaml --show-only templates/clusterrole.yaml \
  --show-only templates/clusterrolebinding.yaml --show-only templates/role.yaml |
  kubectl apply -n flywheel-system -f - >/dev/null
# The operator authenticates as the chart's ServiceAccount, so its RBAC is what the tier tests.
operator_token="$(kubectl create token flywheel -n flywheel-system --duration=2h)"
write_kubeconfig "$CLUSTER_DIR/operator.kubeconfig" flywheel "$operator_token"

export FLYWHEEL_CLUSTER_OPERATOR_KUBECONFIG="$CLUSTER_DIR/operator.kubeconfig"
export FLYWHEEL_CLUSTER_TRAINER_IMAGE="$trainer_image"
export FLYWHEEL_CLUSTER_SERVER_IMAGE="$server_image"
export FLYWHEEL_CLUSTER_DIR="$CLUSTER_DIR"
export FLYWHEEL_CLUSTER_CRDS_APPLY="$CLUSTER_DIR/crds-apply.txt"
# Predictions and feedback go through the API server's service proxy, as a user's client would.
export FLYWHEEL_CLUSTER_API_SERVER="https://127.0.0.1:$apiserver_port"
export FLYWHEEL_CLUSTER_CA="$CLUSTER_DIR/pki/ca.crt"
export FLYWHEEL_CLUSTER_ADMIN_TOKEN="$admin_token"
export FLYWHEEL_CLUSTER_NODE_IP="$node_ip"
if [ "$node_ip" = 127.0.0.1 ]; then
  echo "test-cluster: pods have the IP 127.0.0.1, which the API server does not proxy to: predictions go to the server pod's port directly, the quickstart scenario expects RetrainingDue=Unknown (StatsUnavailable), and the retraining scenario is skipped"
fi
cargo test --locked -p flywheel-e2e --test cluster -- --ignored --test-threads=1 "$@"
echo "test-cluster: ok in $((SECONDS - tier_start)) s (build included)"
