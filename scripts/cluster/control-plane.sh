# A real Kubernetes control plane on loopback for the cluster test tier (scripts/test-cluster.sh):
# etcd, kube-apiserver, kube-controller-manager and fakelet (a fake kubelet and one-node scheduler
# that runs pods as host processes), with a generated CA. Sourced, not run: it defines functions
# and the variables below, and records every PID it starts so cluster_down can stop them.
#
#   K8S_KIT       the kit (kube-apiserver.xz, kube-controller-manager.xz, fakelet.py); default
#                 ../shared/k8s relative to the repository root, or to the main checkout when
#                 this is a linked git worktree
#   CLUSTER_DIR   state of this run (certs, etcd data, logs, kubeconfigs); default a fresh mktemp
#   CLUSTER_NODE_IP  the node's (and so every pod's) IP; default the host's first non-loopback
#                 IPv4 address (see host_ipv4), 127.0.0.1 when it has none
#   KUBECONFIG    set by cluster_up to the admin kubeconfig
# cluster_up also sets apiserver_port, admin_token and node_ip for the caller.
# shellcheck shell=bash

cluster_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
default_kit() {
  local common
  common="$(git -C "$cluster_root" rev-parse --path-format=absolute --git-common-dir 2>/dev/null)"
  if [ ! -d "$cluster_root/../shared/k8s" ] && [ -n "$common" ] && [ -d "$common/../../shared/k8s" ]; then
    (cd "$common/../../shared/k8s" && pwd)
  else
    echo "$cluster_root/../shared/k8s"
  fi
}
K8S_KIT="${K8S_KIT:-$(default_kit)}"
# The binaries are decompressed once into an ignored folder: the kit itself is read-only in CI.
cluster_bin="$cluster_root/.tools/k8s-control-plane"
cluster_pids=()

cluster_log() { echo "cluster: $*" >&2; }

# A TCP port free on every address (the kernel picks it; closed again before the caller binds
# it): fakelet's log server binds the node IP, not loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0",0)); print(s.getsockname()[1])'
}

# The host's first non-loopback IPv4 address, or nothing. fakelet gives it to the node and to
# every pod: the API server refuses to proxy to loopback (services/.../proxy, pods/.../proxy)
# and EndpointSlices refuse to hold it, so only a routable address makes Services work.
host_ipv4() {
  local addresses
  if command -v ip >/dev/null; then
    addresses="$(ip -o -4 addr show scope global 2>/dev/null | awk '{print $4}' | cut -d/ -f1)"
  else
    addresses="$(hostname -I 2>/dev/null | tr ' ' '\n')"
  fi
  echo "$addresses" | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -n 1 || true
}

# etcd from Debian's etcd-server package; the package index is refreshed only when needed.
install_etcd() {
  command -v etcd >/dev/null && return 0
  if [ "$(id -u)" != 0 ]; then
    cluster_log "etcd is missing; install it with: sudo apt-get install -y etcd-server"
    return 1
  fi
  cluster_log "installing etcd (apt-get install etcd-server)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >"${CLUSTER_DIR:-/tmp}/apt.log" 2>&1; then
    apt-get update -q >>"${CLUSTER_DIR:-/tmp}/apt.log" 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >>"${CLUSTER_DIR:-/tmp}/apt.log" 2>&1
  fi
  # The package's service would hold the default ports; this tier starts its own etcd.
  if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
  fi
}

unpack_binaries() {
  mkdir -p "$cluster_bin"
  local b
  for b in kube-apiserver kube-controller-manager; do
    # Re-unpacked when the kit's archive is newer than the copy.
    if [ ! -x "$cluster_bin/$b" ] || [ "$K8S_KIT/bin/$b.xz" -nt "$cluster_bin/$b" ]; then
      cluster_log "unpacking $b into $cluster_bin"
      xz -dc "$K8S_KIT/bin/$b.xz" >"$cluster_bin/$b.tmp"
      chmod +x "$cluster_bin/$b.tmp"
      mv "$cluster_bin/$b.tmp" "$cluster_bin/$b"
    fi
  done
}

make_certs() {
  local pki="$CLUSTER_DIR/pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
      -subj "/CN=flywheel-test-ca" 2>/dev/null
    cat >serving.ext <<'EOF'
subjectAltName = IP:127.0.0.1, DNS:localhost, IP:10.96.0.1, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc
extendedKeyUsage = serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
      -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver.crt -days 2 -extfile serving.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# kubeconfig FILE USER TOKEN: a kubeconfig for the API server authenticating with a bearer token.
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority: $CLUSTER_DIR/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: test
  context: {cluster: test, user: $2}
current-context: test
EOF
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND every half second.
wait_for() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      cluster_log "$what did not come up within ${seconds}s"
      return 1
    fi
    sleep 0.5
  done
}

# start NAME COMMAND...: runs COMMAND in the background with its log in $CLUSTER_DIR/NAME.log.
start() {
  local name="$1"
  shift
  "$@" >"$CLUSTER_DIR/$name.log" 2>&1 &
  cluster_pids+=("$!")
  echo "$!" >"$CLUSTER_DIR/$name.pid"
}

# cluster_up IMAGES_JSON [fakelet flags...]: starts everything and waits until the node is Ready.
cluster_up() {
  local images="$1"
  shift
  CLUSTER_DIR="${CLUSTER_DIR:-$(mktemp -d /tmp/flywheel-cluster.XXXXXX)}"
  mkdir -p "$CLUSTER_DIR"
  install_etcd
  unpack_binaries
  make_certs
  local etcd_port etcd_peer_port kcm_port
  etcd_port="$(free_port)"
  etcd_peer_port="$(free_port)"
  apiserver_port="$(free_port)"
  fakelet_port="$(free_port)"
  admin_token="$(openssl rand -hex 24)"
  echo "$admin_token,admin,admin,system:masters" >"$CLUSTER_DIR/pki/tokens.csv"
  chmod 600 "$CLUSTER_DIR/pki/tokens.csv"
  export KUBECONFIG="$CLUSTER_DIR/admin.kubeconfig"
  write_kubeconfig "$KUBECONFIG" admin "$admin_token"

  start etcd etcd --name flywheel-test --data-dir "$CLUSTER_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "flywheel-test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"

  local pki="$CLUSTER_DIR/pki"
  # --kubelet-certificate-authority: `kubectl logs` verifies the node's serving certificate
  # (fakelet signs it with the cluster CA, the node IP among its names), as with a kubelet.
  start kube-apiserver "$cluster_bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$apiserver_port" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc \
    --authorization-mode=Node,RBAC \
    --kubelet-certificate-authority="$pki/ca.crt" \
    --enable-priority-and-fairness=false
  wait_for kube-apiserver 120 curl -fsS --cacert "$pki/ca.crt" \
    -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$apiserver_port/readyz"

  kcm_port="$(free_port)"
  start kube-controller-manager "$cluster_bin/kube-controller-manager" \
    --kubeconfig="$KUBECONFIG" --bind-address=127.0.0.1 --secure-port="$kcm_port" \
    --leader-elect=false \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --use-service-account-credentials \
    --controllers=job-controller,deployment-controller,replicaset-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,ttl-after-finished-controller,endpoints-controller,endpointslice-controller,certificatesigningrequest-signing-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller
  # The ServiceAccount controller creating `default` shows the controller manager is working.
  wait_for "the default ServiceAccount" 120 kubectl get serviceaccount default -n default

  node_ip="${CLUSTER_NODE_IP:-$(host_ipv4)}"
  if [ -z "$node_ip" ]; then
    node_ip=127.0.0.1
    cluster_log "this host has no non-loopback IPv4 address: pods get 127.0.0.1, which the API server does not proxy to"
  fi
  # The API server stays on loopback; only the node (its log server) and the pods, which are
  # host processes listening on every address, are reached at node_ip.
  start fakelet python3 "$K8S_KIT/fakelet.py" --kubeconfig "$KUBECONFIG" --node fakelet \
    --node-ip "$node_ip" --port "$fakelet_port" --images "$images" \
    --ca-cert "$CLUSTER_DIR/pki/ca.crt" --ca-key "$CLUSTER_DIR/pki/ca.key" \
    --workdir "$CLUSTER_DIR/fakelet" "$@"
  wait_for "the fakelet node" 60 kubectl wait --for=condition=Ready node/fakelet --timeout=1s
  cluster_log "up: KUBECONFIG=$KUBECONFIG, node and pod IP $node_ip, logs in $CLUSTER_DIR"
}

# Stops what cluster_up started, newest first: SIGTERM (the fakelet ends its pods' process groups
# on SIGTERM), then SIGKILL for anything still running after 10 s.
cluster_down() {
  local i pid
  for ((i = ${#cluster_pids[@]} - 1; i >= 0; i--)); do
    pid="${cluster_pids[i]}"
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 20 ]; do
      sleep 0.5
      waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  cluster_pids=()
}
