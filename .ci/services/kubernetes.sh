# A Kubernetes control plane for the Kubernetes provider's tests. Sourced by .ci/run (as root,
# no stdin, under `set -euo pipefail`); safe to source again: every step checks first.
# The binaries come from Debian's `kubernetes` source package, built once and cached
# (scripts/build_test_kubernetes.sh, under /var/cache/hodei-ci). Runs, on loopback only:
# Debian's etcd-server, kube-apiserver (TLS with a CA made here, static token auth, RBAC),
# kube-controller-manager (no node-lifecycle controller; the garbage collector on) and
# kube-scheduler. There is no kubelet: the tests register a node and run its pods with the
# local Docker engine (tests/k8s_node/). Exports HODEI_TEST_K8S_KUBECONFIG (an admin
# kubeconfig) and HODEI_TEST_K8S_DIR (certificates, keys, token file and the binaries' path,
# for a test that starts an API server of its own against the same etcd).
# A step that fails is reported and the run goes on: with HODEI_REQUIRE_SERVICES=1 the tests
# that need the cluster then fail with the reason, and every other test still runs.

HODEI_K8S_DIR=/var/lib/hodei-ci-kubernetes
HODEI_K8S_ETCD_PORT=12379
HODEI_K8S_API_PORT=16443

hodei_k8s_api_answers() {
  [ -f "$HODEI_K8S_DIR/admin.token" ] || return 1
  timeout 5 curl -fsS --cacert "$HODEI_K8S_DIR/ca.crt" \
    -H "Authorization: Bearer $(cat "$HODEI_K8S_DIR/admin.token")" \
    "https://127.0.0.1:$HODEI_K8S_API_PORT/readyz" >/dev/null 2>&1
}

hodei_k8s_wait() { # $1: what, $2: pid, then the check command
  local what=$1 pid=$2 i
  shift 2
  for i in $(seq 1 120); do
    "$@" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "$what did not come up; its log ends with:" >&2
  tail -n 15 "$HODEI_K8S_DIR/$what.log" >&2
  return 1
}

hodei_k8s_install() {
  local packages=()
  command -v etcd >/dev/null || packages+=(etcd-server)
  command -v openssl >/dev/null || packages+=(openssl)
  command -v curl >/dev/null || packages+=(curl)
  [ "${#packages[@]}" -eq 0 ] && return 0
  echo "installing ${packages[*]}"
  apt-get update -qq || return 1
  # The etcd-server package would start a system etcd where an init system runs: forbid it.
  local policy=/usr/sbin/policy-rc.d made=0 status
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
  fi
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  status=$?
  [ "$made" = 1 ] && rm -f "$policy"
  return "$status"
}

hodei_k8s_credentials() { # once: a CA, the API server's certificate, the service-account key
  local d=$HODEI_K8S_DIR
  mkdir -p "$d" && chmod 700 "$d"
  [ -s "$d/admin.token" ] && [ -s "$d/apiserver.crt" ] && [ -s "$d/sa.key" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hodei-ci-kubernetes-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null || return 1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null || return 1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n' \
    >"$d/apiserver.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
    -CAcreateserial -days 3650 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" \
    2>/dev/null || return 1
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null || return 1
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null || return 1
  # Static tokens: the tests' admin, and the control plane's own components.
  local admin controllers scheduler
  admin=$(openssl rand -hex 24) controllers=$(openssl rand -hex 24) scheduler=$(openssl rand -hex 24)
  {
    echo "$admin,hodei-ci-admin,hodei-ci-admin,\"system:masters\""
    echo "$controllers,system:kube-controller-manager,kcm,\"system:masters\""
    echo "$scheduler,system:kube-scheduler,sched,\"system:masters\""
  } >"$d/tokens.csv"
  hodei_k8s_kubeconfig "$d/controller-manager.kubeconfig" "$controllers"
  hodei_k8s_kubeconfig "$d/scheduler.kubeconfig" "$scheduler"
  hodei_k8s_kubeconfig "$d/admin.kubeconfig" "$admin"
  echo "$admin" >"$d/admin.token" # last: its presence says the directory is complete
}

hodei_k8s_kubeconfig() { # $1: file, $2: token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hodei-ci
  cluster:
    server: https://127.0.0.1:$HODEI_K8S_API_PORT
    certificate-authority-data: $(base64 -w0 "$HODEI_K8S_DIR/ca.crt")
users:
- name: hodei-ci
  user:
    token: $2
contexts:
- name: hodei-ci
  context: {cluster: hodei-ci, user: hodei-ci, namespace: default}
current-context: hodei-ci
EOF
  chmod 600 "$1"
}

# The API server's flags, shared with the tests that start one of their own (port: $1).
hodei_k8s_apiserver_args() {
  local d=$HODEI_K8S_DIR
  printf '%s\n' \
    --etcd-servers="http://127.0.0.1:$HODEI_K8S_ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$1" \
    --insecure-port=0 --endpoint-reconciler-type=none \
    --tls-cert-file="$d/apiserver.crt" --tls-private-key-file="$d/apiserver.key" \
    --token-auth-file="$d/tokens.csv" --authorization-mode=RBAC \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$d/sa.pub" --service-account-signing-key-file="$d/sa.key" \
    --service-cluster-ip-range=10.96.0.0/24 --allow-privileged=false --profiling=false
}

hodei_k8s_start() {
  local d=$HODEI_K8S_DIR bin=$1 pid
  hodei_k8s_api_answers && return 0
  if ! timeout 5 curl -fsS "http://127.0.0.1:$HODEI_K8S_ETCD_PORT/health" >/dev/null 2>&1; then
    echo "starting etcd on 127.0.0.1:$HODEI_K8S_ETCD_PORT (log: $d/etcd.log)"
    setsid etcd --name hodei-ci --data-dir "$d/etcd" \
      --listen-client-urls "http://127.0.0.1:$HODEI_K8S_ETCD_PORT" \
      --advertise-client-urls "http://127.0.0.1:$HODEI_K8S_ETCD_PORT" \
      --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
      --initial-cluster hodei-ci=http://127.0.0.1:12380 \
      </dev/null >>"$d/etcd.log" 2>&1 &
    pid=$!
    hodei_k8s_wait etcd "$pid" timeout 5 curl -fsS "http://127.0.0.1:$HODEI_K8S_ETCD_PORT/health" \
      -o /dev/null || return 1
  fi
  echo "starting kube-apiserver on 127.0.0.1:$HODEI_K8S_API_PORT (log: $d/apiserver.log)"
  local args
  mapfile -t args < <(hodei_k8s_apiserver_args "$HODEI_K8S_API_PORT")
  printf '%s\n' "${args[@]}" >"$d/apiserver.args" # for a test's own API server (other port)
  setsid nice "$bin/kube-apiserver" "${args[@]}" </dev/null >>"$d/apiserver.log" 2>&1 &
  pid=$!
  hodei_k8s_wait apiserver "$pid" hodei_k8s_api_answers || return 1
  echo "starting kube-controller-manager and kube-scheduler (logs: $d/*.log)"
  # No node-lifecycle controller (no kubelet heartbeats here); the garbage collector is on.
  # (Each only when not running yet: the API server may be the only part that had stopped.)
  pgrep -f "kube-controller-manager --kubeconfig=$d/controller-manager.kubeconfig" >/dev/null ||
  setsid nice "$bin/kube-controller-manager" --kubeconfig="$d/controller-manager.kubeconfig" \
    --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port=0 \
    --controllers='*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-route,-service,-csrsigning' \
    --service-account-private-key-file="$d/sa.key" --root-ca-file="$d/ca.crt" \
    --use-service-account-credentials=false \
    </dev/null >>"$d/controller-manager.log" 2>&1 &
  pgrep -f "kube-scheduler --kubeconfig=$d/scheduler.kubeconfig" >/dev/null ||
  setsid nice "$bin/kube-scheduler" --kubeconfig="$d/scheduler.kubeconfig" \
    --leader-elect=false --port=0 --bind-address=127.0.0.1 --secure-port=0 \
    </dev/null >>"$d/scheduler.log" 2>&1 &
  echo "$bin" >"$d/bin-dir"
}

hodei_k8s_setup() {
  hodei_k8s_install || return 1
  local bin started=$SECONDS
  bin=$(nice bash scripts/build_test_kubernetes.sh | tail -n 1) || return 1
  [ -x "$bin/kube-apiserver" ] || return 1
  echo "kubernetes binaries ready in $((SECONDS - started))s ($bin)"
  hodei_k8s_credentials || return 1
  hodei_k8s_start "$bin" || return 1
  export HODEI_TEST_K8S_KUBECONFIG="$HODEI_K8S_DIR/admin.kubeconfig"
  export HODEI_TEST_K8S_DIR="$HODEI_K8S_DIR"
  echo "kubernetes API server ready at https://127.0.0.1:$HODEI_K8S_API_PORT"
}

if ! hodei_k8s_setup; then
  echo "warning: the Kubernetes test cluster could not be set up; the tests that need it will say so" >&2
fi
