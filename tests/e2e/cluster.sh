#!/usr/bin/env bash
# A real single-node Kubernetes cluster for the end-to-end tier.
#
#   tests/e2e/cluster.sh up              # start (idempotent); prints the kubeconfig path last
#   tests/e2e/cluster.sh status          # what runs; exit 0 only when the node is Ready
#   tests/e2e/cluster.sh load A.tar ...  # import docker-archive images into the node
#   tests/e2e/cluster.sh kubeconfig      # print the kubeconfig path
#   tests/e2e/cluster.sh smoke           # run a non-root pod with a GPU limit and a PVC to Completed
#   tests/e2e/cluster.sh restart-apiserver  # stop kube-apiserver and start it again (an upgrade, a crash)
#   tests/e2e/cluster.sh down            # stop everything and put the machine back as it was
#
# Where a Docker engine answers, this is kind. Otherwise (CI and development
# machines have the docker CLI but no daemon) the script runs the pieces
# itself as root: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet and kube-proxy, Kubernetes v1.20.2 from
# scripts/k8s-binaries.sh. See docs/cluster.md for how that works.
#
# Environment: HPO_E2E_DIR (state, default /tmp/hpo-e2e), HPO_E2E_GPUS
# (nvidia.com/gpu capacity to advertise, default 4), HPO_E2E_VOLUME_UID (owner
# of dynamically provisioned volumes, default 1000), HPO_E2E_API_PORT (16443).
set -euo pipefail
# Sorting and comparing iptables dumps needs one collation.
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=hpo-e2e
STATE=${HPO_E2E_DIR:-/tmp/hpo-e2e}
# Unix sockets live here: their paths must stay short (108 bytes), whatever HPO_E2E_DIR is.
RUN=/run/hpo-e2e
KUBECONFIG_PATH=$STATE/kubeconfig
HOST=$STATE/host          # what the machine looked like before the first `up`, for `down`
PIDS=$STATE/pids
LOGS=$STATE/logs
PKI=$STATE/pki
SOCK=$RUN/containerd.sock

NODE=hpo-e2e-node
BRIDGE=hpo-e2e0
# Private ranges of our own; nothing on the machine routes them. The bridge's
# gateway address is also the node's and the API server's address, so that
# all cluster traffic stays on loopback and this bridge.
POD_CIDR=10.222.0.0/24
GATEWAY=10.222.0.1
SERVICE_CIDR=10.223.0.0/24
# Fixed ports below the ephemeral range (32768+), away from the defaults
# (2379, 6443, 10250, ...) so that another cluster or the integration tier
# (which takes free ephemeral ports) never collides with this one.
ETCD_PORT=23790
ETCD_PEER_PORT=23800
API_PORT=${HPO_E2E_API_PORT:-16443}
KUBELET_PORT=20250
KUBELET_HEALTHZ_PORT=20248
PROXY_HEALTHZ_PORT=20256
PROXY_METRICS_PORT=20249

GPUS=${HPO_E2E_GPUS:-4}
# The operator's pods run as uid 1000 (controller/builders.py). The in-tree
# hostPath provisioner makes each volume directory with mode 0750 and ignores
# fsGroup, so the controller manager runs as this uid: the directories it makes
# are then writable by the pods.
VOLUME_UID=${HPO_E2E_VOLUME_UID:-1000}
HOSTPATH_PV_DIR=/tmp/hostpath_pv   # hard-coded in the 1.20 hostPath provisioner
ADMIN_TOKEN=hpo-e2e-admin-token
PAUSE_IMAGE=docker.io/hpo-e2e/pause:3.4.1
BUSYBOX_IMAGE=docker.io/hpo-e2e/busybox:1
CACHE_ROOT=${HPO_CACHE_DIR:-${HOME:-/root}/.cache/hpo-operator}

# Paths that kubelet 1.20 and containerd 1.6 write to whatever their flags
# say; `down` removes the ones that did not exist before `up`.
HARDCODED_PATHS=(/var/lib/kubelet /var/log/pods /var/log/containers /var/lib/cni /run/containerd
                 "$HOSTPATH_PV_DIR")
# Kernel settings that kubelet (setupKernelTunables), kube-proxy and the CNI
# bridge plugin change; `down` restores the values found before `up`.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
         net.bridge.bridge-nf-call-ip6tables vm.overcommit_memory vm.panic_on_oom kernel.panic
         kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes
         net.netfilter.nf_conntrack_max)
# Start order; `down` stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy)

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# ---- packages -----------------------------------------------------------------
# shellcheck source=../../scripts/lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

# ---- mode -----------------------------------------------------------------------
docker_answers() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }

mode() {
  # The mode of a cluster that exists wins; otherwise what this machine can do.
  if [ -f "$STATE/mode" ]; then cat "$STATE/mode"
  elif docker_answers; then echo kind
  else echo native
  fi
}

# ---- kind (machines with a Docker engine) ---------------------------------------
kind_up() {
  command -v kind >/dev/null 2>&1 || die "a Docker engine answers but kind is not installed (https://kind.sigs.k8s.io)"
  mkdir -p "$STATE"
  echo kind >"$STATE/mode"
  if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_PATH" --wait 180s >&2
  else
    kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_PATH" >&2
  fi
  # kind ships the default StorageClass "standard" (local-path, world-writable
  # volumes); only the GPU stand-in is missing.
  local node
  for node in $(kc get nodes -o name); do patch_gpu_capacity "${node#node/}"; done
  wait_for 120 "default ServiceAccount" kc get serviceaccount default -n default
  echo "$KUBECONFIG_PATH"
}

# ---- small helpers ----------------------------------------------------------------
wait_for() {
  # wait_for SECONDS WHAT CMD...: retry CMD until it succeeds.
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${timeout}s waiting for $what"; return 1; }
    check_alive
    sleep 0.5
  done
}

pid_of() { [ -f "$PIDS/$1.pid" ] && cut -d' ' -f1 "$PIDS/$1.pid"; }

alive() {
  # The recorded pid still runs the recorded binary (pids get reused).
  local pid exe
  [ -f "$PIDS/$1.pid" ] || return 1
  read -r pid exe <"$PIDS/$1.pid"
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]
}

check_alive() {
  local c
  for c in "${COMPONENTS[@]}"; do
    if [ -f "$PIDS/$c.pid" ] && ! alive "$c"; then
      log "$c exited; last lines of $LOGS/$c.log:"
      tail -n 25 "$LOGS/$c.log" >&2 || true
      die "$c is not running (run '$0 down' to clean up)"
    fi
  done
}

spawn() {
  # spawn NAME ARGV...: start a daemon under setsid, leader of its own
  # process group (so `down` can signal the whole group), and record its pid
  # and binary.
  local name=$1; shift
  local exe
  exe=$(readlink -f "$(command -v "$1")")
  # Background jobs of a non-interactive shell are not group leaders, so
  # setsid execs in place and $! is the daemon's pid. Fd 9 (the command
  # lock, see main) is closed: a daemon holding it would block every later call.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9<&- &
  local pid=$!
  if [ "$name" = kube-controller-manager ]; then exe=$(readlink -f "$BIN/kube-controller-manager"); fi
  echo "$pid $exe" >"$PIDS/$name.pid"
  # Until setsid (and setpriv) have exec'd, the pid runs another binary and
  # `alive` would call the daemon dead.
  for _ in $(seq 1 100); do alive "$name" && return 0; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  alive "$name" || check_alive
}

stop_component() {
  local name=$1 pid
  [ -f "$PIDS/$name.pid" ] || return 0
  if alive "$name"; then
    pid=$(pid_of "$name")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$name" || break; sleep 0.1; done
    if alive "$name"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 50); do alive "$name" || break; sleep 0.1; done
  fi
  rm -f "$PIDS/$name.pid"
}

port_free() { ! ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }

# ---- docker-archive images without Docker -------------------------------------------
pack_image() {
  # pack_image REF ROOTFS OUT CONFIG_JSON: a docker-archive tarball (what
  # `docker save` writes and `ctr images import` / `kind load image-archive`
  # read) with one layer made of the ROOTFS directory.
  local ref=$1 rootfs=$2 out=$3 config_extra=$4
  local work arch diff cfg_sha repo_tag
  work=$(mktemp -d "$STATE/pack.XXXXXX")
  case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -cf "$work/layer.tar" .
  diff=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"tests/e2e/cluster.sh"}]}' \
    "$arch" "$config_extra" "$diff" >"$work/config.json"
  cfg_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
  mv "$work/config.json" "$work/$cfg_sha.json"
  mkdir "$work/$diff"
  mv "$work/layer.tar" "$work/$diff/layer.tar"
  repo_tag=${ref#docker.io/}
  printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]' "$cfg_sha" "$repo_tag" "$diff" \
    >"$work/manifest.json"
  tar -C "$work" --mtime=@0 -cf "$out" manifest.json "$cfg_sha.json" "$diff"
  rm -rf "$work"
}

ctr_import() { ctr --address "$SOCK" -n k8s.io images import "$1" >&2; }

# ---- host snapshot and restore ---------------------------------------------------
snapshot_host() {
  # Written once, before anything is changed, and kept until `down` finished.
  [ -f "$HOST/done" ] && return 0
  mkdir -p "$HOST"
  local s p v
  : >"$HOST/sysctl"
  for s in "${SYSCTLS[@]}"; do
    if v=$(sysctl -n "$s" 2>/dev/null); then printf '%s=%s\n' "$s" "$v" >>"$HOST/sysctl"; fi
  done
  : >"$HOST/created"
  for p in "${HARDCODED_PATHS[@]}"; do [ -e "$p" ] || echo "$p" >>"$HOST/created"; done
  iptables_tagged iptables >"$HOST/iptables" || true
  iptables_tagged ip6tables >"$HOST/ip6tables" || true
  touch "$HOST/done"
}

iptables_tagged() {
  # "TABLE<TAB>LINE" for every chain declaration and rule, so that two dumps compare line by line.
  { "$1-save" 2>/dev/null || true; } | awk '/^\*/{t=substr($0,2); next} /^[:-]/{print t "\t" $0}' | sed 's/ \[[0-9]*:[0-9]*\]$//'
}

restore_iptables() {
  # Delete the rules and chains that appeared since the snapshot and belong
  # to this cluster (kubelet's and kube-proxy's KUBE-*, CNI plugins' CNI-*,
  # our own rule tagged hpo-e2e); whatever else someone added stays.
  local cmd=$1 table line chain
  [ -f "$HOST/$cmd" ] || return 0
  command -v "$cmd-save" >/dev/null 2>&1 || return 0
  local now
  now=$(mktemp)
  iptables_tagged "$cmd" | sort >"$now"
  local new
  new=$(sort "$HOST/$cmd" | comm -13 - "$now")
  rm -f "$now"
  [ -n "$new" ] || return 0
  # New chains of ours: flushed and deleted below.
  local chains
  chains=$(awk -F'\t' '$2 ~ /^:(KUBE-|CNI-)/{split($2, a, " "); print $1 "\t" substr(a[1], 2)}' <<<"$new")
  # Our rules in other chains (the built-in ones: an empty table dumps
  # nothing, so "existed before" cannot be read from the snapshot): delete
  # them one by one, first, or the chains they jump to cannot be deleted.
  while IFS=$'\t' read -r table line; do
    case "$line" in -A\ *) ;; *) continue ;; esac
    case "$line" in *KUBE-*|*CNI-*|*hpo-e2e*) ;; *) continue ;; esac
    chain=$(awk '{print $2}' <<<"$line")
    grep -qxF "$table"$'\t'"$chain" <<<"$chains" && continue
    eval "$cmd -w -t $table -D ${line#-A }" 2>/dev/null || log "WARNING: could not delete $cmd -t $table $line"
  done <<<"$new"
  [ -n "$chains" ] || return 0
  # Flush them all first (they jump to each other), then delete.
  while IFS=$'\t' read -r table chain; do "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true; done <<<"$chains"
  while IFS=$'\t' read -r table chain; do "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true; done <<<"$chains"
}

restore_sysctls() {
  [ -f "$HOST/sysctl" ] || return 0
  local kv
  while IFS= read -r kv; do
    [ "$(sysctl -n "${kv%%=*}" 2>/dev/null)" = "${kv#*=}" ] || sysctl -qw "$kv" >/dev/null 2>&1 || true
  done <"$HOST/sysctl"
}

our_mounts() {
  # Mount points under our directories (and the hard-coded ones we created),
  # deepest first.
  local prefixes=("$STATE" "$RUN") p
  if [ -f "$HOST/created" ]; then
    while IFS= read -r p; do [ -n "$p" ] && prefixes+=("$p"); done <"$HOST/created"
  fi
  # Field 5 of mountinfo is the mount point, with spaces escaped as \040.
  awk -v prefixes="${prefixes[*]}" '
    BEGIN { n = split(prefixes, pre, " ") }
    { m = $5; gsub(/\\040/, " ", m)
      for (i = 1; i <= n; i++) if (m == pre[i] || index(m, pre[i] "/") == 1) { print length(m) "\t" m; break } }
  ' /proc/self/mountinfo | sort -rn | cut -f2-
}

unmount_ours() {
  local m
  for _ in 1 2 3; do
    while IFS= read -r m; do
      [ -n "$m" ] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done < <(our_mounts)
    [ -z "$(our_mounts)" ] && return 0
  done
  return 1
}

kill_pods_processes() {
  # Container processes live in the kubepods cgroups; their shims were
  # started by our containerd (its socket is in their command line).
  local f pid
  for f in /sys/fs/cgroup/*/kubepods; do
    [ -d "$f" ] || continue
    # runc removes a container's cgroup as it dies: find may then fail mid-walk.
    { find "$f" -name cgroup.procs -exec cat {} + 2>/dev/null || true; } | while read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    if tr '\0' '\n' 2>/dev/null <"$f" | grep -qxF "$SOCK"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

shims_running() {
  local f
  for f in /proc/[0-9]*/cmdline; do
    tr '\0' '\n' 2>/dev/null <"$f" | grep -qxF "$SOCK" && return 0
  done
  return 1
}

remove_pod_cgroups() {
  [ -f "$HOST/created-cgroups" ] || return 0
  local f
  for f in /sys/fs/cgroup/*/kubepods; do
    [ -d "$f" ] && find "$f" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# ---- native cluster: up -----------------------------------------------------------
preflight() {
  [ "$(id -u)" -eq 0 ] || die "the native cluster needs root (kubelet, containerd, iptables, mounts)"
  command -v kubectl >/dev/null 2>&1 || die "kubectl is not on PATH"
  local p
  for p in $ETCD_PORT $ETCD_PEER_PORT $API_PORT $KUBELET_PORT $KUBELET_HEALTHZ_PORT $PROXY_HEALTHZ_PORT \
           $PROXY_METRICS_PORT; do
    port_free "$p" || die "port $p is taken by another process (ss -ltnp '( sport = :$p )')"
  done
  # Another kubelet on this machine would share the pod cgroups.
  for p in /sys/fs/cgroup/*/kubepods; do
    [ -d "$p" ] && die "$p exists: another kubelet runs here"
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then die "network interface $BRIDGE exists already"; fi
  # The pod range must be ours alone.
  if ip -o route show to match "$GATEWAY" | grep -qv '^default'; then die "$POD_CIDR is routed on this machine already"; fi
  return 0
}

write_kubeconfig() {
  # write_kubeconfig PATH: the admin token (group system:masters) and the API
  # server's self-signed certificate as the CA.
  local ca=$PKI/apiserver/apiserver.crt
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
current-context: $CLUSTER
clusters:
- name: $CLUSTER
  cluster:
    server: https://$GATEWAY:$API_PORT
    certificate-authority: $ca
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: $CLUSTER
  context: {cluster: $CLUSTER, user: admin}
EOF
  chmod 600 "$1"
}

make_pki() {
  mkdir -p "$PKI/apiserver"
  chmod 700 "$PKI"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  echo "$ADMIN_TOKEN,hpo-e2e-admin,hpo-e2e-admin,\"system:masters\"" >"$PKI/tokens.csv"
  # The API server proves itself to the kubelet (logs, exec) with a client
  # certificate from a CA the kubelet trusts; nothing else may call the kubelet.
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=hpo-e2e-kubelet-client-ca \
    -keyout "$PKI/kubelet-client-ca.key" -out "$PKI/kubelet-client-ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=hpo-e2e-apiserver" \
    -keyout "$PKI/apiserver-kubelet-client.key" -out "$PKI/apiserver-kubelet-client.csr" 2>/dev/null
  openssl x509 -req -days 30 -in "$PKI/apiserver-kubelet-client.csr" -CA "$PKI/kubelet-client-ca.crt" \
    -CAkey "$PKI/kubelet-client-ca.key" -CAcreateserial -out "$PKI/apiserver-kubelet-client.crt" 2>/dev/null
  # The controller manager runs as VOLUME_UID and reads its own copies.
  mkdir -p "$STATE/kcm"
  cp "$PKI/sa.key" "$STATE/kcm/sa.key"
}

make_network() {
  # The CNI bridge plugin would create the bridge with the first pod; the API
  # server and the kubelet need its address before that.
  ip link add "$BRIDGE" type bridge
  ip addr add "$GATEWAY/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pods get no route to the outside: drop what they send anywhere but their bridge.
  iptables -w -I FORWARD -s "$POD_CIDR" ! -o "$BRIDGE" -m comment --comment "hpo-e2e: pods stay on their bridge" -j DROP
  # Service traffic between pods on one bridge must pass iptables (kube-proxy's DNAT).
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 >/dev/null 2>&1 || true
  mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
  cat >"$STATE/cni/net.d/10-hpo-e2e.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CLUSTER",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_apiserver() {
  # Bound to the bridge's address only (not 0.0.0.0): pods reach it through
  # the `kubernetes` Service (kube-proxy DNATs to this address), the host
  # through the same address; the external interface never carries it.
  spawn kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$GATEWAY" --advertise-address="$GATEWAY" \
    --secure-port="$API_PORT" --insecure-port=0 --cert-dir="$PKI/apiserver" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --api-audiences=https://kubernetes.default.svc \
    --token-auth-file="$PKI/tokens.csv" --authorization-mode=RBAC \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --enable-priority-and-fairness=false --v=1
  wait_for 90 "kube-apiserver /readyz" \
    curl -sfk -H "Authorization: Bearer $ADMIN_TOKEN" "https://$GATEWAY:$API_PORT/readyz"
}

start_control_plane() {
  spawn etcd /usr/bin/etcd --data-dir "$STATE/etcd" --name default --log-level warn \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_for 60 etcd curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  start_apiserver
  write_kubeconfig "$KUBECONFIG_PATH"

  # The controller manager makes the hostPath volumes, so it runs as the
  # pods' uid (see VOLUME_UID); it serves nothing (--port=0 --secure-port=0).
  write_kubeconfig "$STATE/kcm/kubeconfig"
  mkdir -p "$HOSTPATH_PV_DIR"
  chown "$VOLUME_UID:$VOLUME_UID" "$HOSTPATH_PV_DIR" "$STATE/kcm" "$STATE/kcm/kubeconfig" "$STATE/kcm/sa.key"
  chmod 755 "$HOSTPATH_PV_DIR"
  chmod 711 "$PKI" && chmod 755 "$PKI/apiserver" && chmod 644 "$PKI/apiserver/apiserver.crt"
  spawn kube-controller-manager setpriv --reuid="$VOLUME_UID" --regid="$VOLUME_UID" --clear-groups -- \
    "$BIN/kube-controller-manager" --kubeconfig="$STATE/kcm/kubeconfig" \
    --service-account-private-key-file="$STATE/kcm/sa.key" \
    --root-ca-file="$PKI/apiserver/apiserver.crt" \
    --enable-hostpath-provisioner --leader-elect=false --port=0 --secure-port=0 --v=1
  spawn kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_PATH" \
    --leader-elect=false --port=0 --secure-port=0 --v=1
}

start_containerd() {
  mkdir -p "$STATE/containerd" "$RUN"
  # A containerd of our own (root, state, sockets, runc root, CNI config and
  # network namespaces all under our dirs) that cannot clash with one the
  # machine may run. Two settings were found necessary on these machines:
  # restrict_oom_score_adj (runc may not lower oom_score_adj here; without it
  # every sandbox fails with "can't get final child's PID from pipe") and a
  # local sandbox_image (there is no registry to pull pause from).
  cat >"$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
  spawn containerd containerd --config "$STATE/containerd/config.toml"
  wait_for 60 containerd ctr --address "$SOCK" version

  # The pause image from the static pause binary of the Kubernetes build.
  local root=$STATE/images/pause-root
  mkdir -p "$root"
  install -m 0755 "$BIN/pause" "$root/pause"
  pack_image "$PAUSE_IMAGE" "$root" "$STATE/images/pause.tar" '{"Entrypoint":["/pause"]}'
  rm -rf "$root"
  ctr_import "$STATE/images/pause.tar"
}

start_node() {
  mkdir -p "$STATE/kubelet"
  cat >"$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GATEWAY
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
cgroupDriver: cgroupfs
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/kubelet-client-ca.crt}
authorization:
  mode: Webhook
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# A shared development disk may be fuller than the default 10-15 %
# thresholds allow; pods must not be evicted for that.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
volumePluginDir: $STATE/kubelet-plugins
# The node turns Ready on the first status update after the runtime is up;
# at the default 10 s that is most of the start-up time.
nodeStatusUpdateFrequency: 2s
EOF
  # The kubelet registers with the admin token: RBAC alone (no node
  # certificates) is enough for a throwaway single-node cluster. The node's
  # address is the bridge's gateway, and the API server reaches the kubelet
  # by that InternalIP, so the node name needs no /etc/hosts entry.
  spawn kubelet "$BIN/kubelet" --config="$STATE/kubelet-config.yaml" \
    --kubeconfig="$KUBECONFIG_PATH" --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" \
    --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" \
    --image-service-endpoint="unix://$SOCK" \
    --hostname-override="$NODE" --node-ip="$GATEWAY" --v=1
  # iptables mode, so that pods reach the API server at the `kubernetes`
  # Service's address. It leaves conntrack sysctls alone (the zeros) and only
  # opens NodePorts on the bridge address.
  spawn kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG_PATH" --proxy-mode=iptables \
    --cluster-cidr="$POD_CIDR" --hostname-override="$NODE" --bind-address="$GATEWAY" \
    --nodeport-addresses="$GATEWAY/32" \
    --healthz-bind-address="127.0.0.1:$PROXY_HEALTHZ_PORT" --metrics-bind-address="127.0.0.1:$PROXY_METRICS_PORT" \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 --v=1
}

patch_gpu_capacity() {
  # A stand-in for the NVIDIA device plugin: extended resources advertised on
  # the node's status are scheduled like real GPUs (no device is attached).
  kc patch node "$1" --subresource=status --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/status/capacity/nvidia.com~1gpu\",\"value\":\"$GPUS\"}]" >/dev/null
}

node_ready() {
  [ "$(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

node_schedulable() {
  # The node lifecycle controller lifts the not-ready taint a few seconds
  # after Ready; a pod created before that waits out the scheduler's backoff.
  ! kc get node "$NODE" -o 'jsonpath={.spec.taints[*].key}' | grep -q 'node.kubernetes.io/not-ready'
}

gpus_allocatable() {
  [ "$(kc get node "$NODE" -o 'jsonpath={.status.allocatable.nvidia\.com/gpu}' 2>/dev/null)" = "$GPUS" ]
}

apply_storage_class() {
  kc apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}

healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  node_ready
}

native_up() {
  preflight
  local t0=$SECONDS
  apt_install containerd runc containernetworking-plugins iptables conntrack openssl curl iproute2 util-linux
  BIN=$("$REPO/scripts/k8s-binaries.sh" | tail -n1)
  [ -x "$BIN/kubelet" ] && [ -x "$BIN/pause" ] || die "scripts/k8s-binaries.sh gave no usable bin dir ($BIN)"
  mkdir -p "$STATE" "$PIDS" "$LOGS" "$STATE/images"
  echo native >"$STATE/mode"
  snapshot_host
  touch "$HOST/created-cgroups"   # preflight saw no kubepods cgroups: ours to remove
  log "network: bridge $BRIDGE $GATEWAY (pods $POD_CIDR, services $SERVICE_CIDR)"
  make_network
  make_pki
  log "control plane: etcd 127.0.0.1:$ETCD_PORT, kube-apiserver https://$GATEWAY:$API_PORT"
  start_control_plane
  log "containerd ($SOCK) and the pause image"
  start_containerd
  log "kubelet and kube-proxy (node $NODE)"
  start_node
  apply_storage_class_retry
  wait_for 120 "node $NODE to register" kc get node "$NODE"
  wait_for 30 "nvidia.com/gpu capacity" patch_gpu_capacity "$NODE"
  wait_for 120 "node $NODE Ready" node_ready
  wait_for 60 "node $NODE without the not-ready taint" node_schedulable
  wait_for 60 "nvidia.com/gpu allocatable" gpus_allocatable
  wait_for 60 "default ServiceAccount" kc get serviceaccount default -n default
  log "cluster up in $((SECONDS - t0)) s"
}

apply_storage_class_retry() { wait_for 60 "StorageClass standard" apply_storage_class; }

# ---- native cluster: down -----------------------------------------------------------
native_down() {
  [ "$(id -u)" -eq 0 ] || die "needs root"
  # Best effort to the end: one step failing must not leave the rest undone.
  set +e
  # Graceful first: with nothing left to recreate or reschedule pods, delete
  # them all so the kubelet stops their sandboxes (CNI DEL, unmounts).
  stop_component kube-controller-manager
  stop_component kube-scheduler
  if alive kube-apiserver && alive kubelet && alive containerd && [ -f "$KUBECONFIG_PATH" ]; then
    if kc delete pods --all --all-namespaces --force --grace-period=0 --wait=false >/dev/null 2>&1; then
      local deadline=$((SECONDS + 30))
      while shims_running && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
    fi
  fi
  stop_component kube-proxy
  stop_component kubelet
  # Whatever is left of the pods, then the runtime.
  kill_pods_processes
  stop_component containerd
  kill_pods_processes
  stop_component kube-apiserver
  stop_component etcd
  local c
  for c in "${COMPONENTS[@]}"; do stop_component "$c"; done

  unmount_ours || log "WARNING: could not unmount: $(our_mounts | tr '\n' ' ')"
  remove_pod_cgroups
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link delete "$BRIDGE" || true; fi
  restore_iptables iptables
  restore_iptables ip6tables
  restore_sysctls
  set -e
  if [ -n "$(our_mounts)" ]; then
    die "mounts remain under $STATE or $RUN; not deleting them: $(our_mounts | tr '\n' ' ')"
  fi
  local p
  if [ -f "$HOST/created" ]; then
    while IFS= read -r p; do [ -n "$p" ] && rm -rf --one-file-system "$p"; done <"$HOST/created"
  fi
  rm -rf --one-file-system "$RUN" "$STATE"
}

# ---- smoke test ------------------------------------------------------------------------
busybox_binary() {
  # A static busybox from Debian's busybox-static, extracted (not installed:
  # it would replace a dynamic busybox the machine may rely on).
  local cache=$CACHE_ROOT/e2e
  if [ ! -x "$cache/busybox" ]; then
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download busybox-static >/dev/null 2>&1) || {
      apt-get update -qq >&2; (cd "$tmp" && apt-get download busybox-static >&2); }
    dpkg-deb -x "$tmp"/busybox-static_*.deb "$tmp/x"
    mkdir -p "$cache"
    install -m 0755 "$tmp/x/bin/busybox" "$cache/busybox"
    rm -rf "$tmp"
  fi
  echo "$cache/busybox"
}

smoke() {
  local bb root
  bb=$(busybox_binary)
  mkdir -p "$STATE/images"
  root=$(mktemp -d "$STATE/images/busybox-root.XXXXXX")
  mkdir -p "$root/bin" "$root/tmp"
  chmod 1777 "$root/tmp"
  install -m 0755 "$bb" "$root/bin/busybox"
  local a
  for a in $("$bb" --list); do [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"; done
  pack_image "$BUSYBOX_IMAGE" "$root" "$STATE/images/busybox.tar" '{"Env":["PATH=/bin"],"Cmd":["sh"]}'
  rm -rf "$root"
  cmd_load "$STATE/images/busybox.tar"

  kc delete pod hpo-e2e-smoke --ignore-not-found --wait=true >/dev/null
  kc delete pvc hpo-e2e-smoke --ignore-not-found --wait=true >/dev/null
  # The operator's trial pods in small: non-root, a GPU limit, a claim from
  # the default StorageClass; the pod writes to the claim and calls the API
  # server through the `kubernetes` Service.
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: hpo-e2e-smoke, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 16Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: hpo-e2e-smoke, namespace: default}
spec:
  restartPolicy: Never
  dnsPolicy: Default
  securityContext: {runAsUser: 1000, runAsGroup: 1000, fsGroup: 1000}
  containers:
  - name: smoke
    image: ${BUSYBOX_IMAGE#docker.io/}
    imagePullPolicy: Never
    command: [sh, -c]
    args:
    - |
      set -e
      echo "uid=\$(id -u)"
      echo written > /data/probe && echo "volume: \$(cat /data/probe)"
      # The kubernetes Service address, which kube-proxy DNATs to the API server.
      wget -q -O - --no-check-certificate "https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/version" \
        | grep '"gitVersion"'
      echo "api: reached via \$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT"
    resources:
      limits: {nvidia.com/gpu: 1, cpu: 100m, memory: 32Mi}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: hpo-e2e-smoke}
EOF
  local phase="" deadline=$((SECONDS + 120))
  while [ "$SECONDS" -lt "$deadline" ]; do
    phase=$(kc get pod hpo-e2e-smoke -o 'jsonpath={.status.phase}' 2>/dev/null || true)
    case "$phase" in Succeeded|Failed) break ;; esac
    sleep 1
  done
  kc logs hpo-e2e-smoke >&2 || true
  if [ "$phase" != Succeeded ]; then
    kc describe pod hpo-e2e-smoke >&2 || true
    die "smoke pod ended in phase '${phase:-unknown}'"
  fi
  kc delete pod hpo-e2e-smoke --wait=true >/dev/null
  kc delete pvc hpo-e2e-smoke --wait=true >/dev/null
  log "smoke: PASS (pod Completed as uid 1000 with nvidia.com/gpu: 1 and a PVC; API reachable via the kubernetes Service)"
}

# ---- commands ----------------------------------------------------------------------------
cmd_up() {
  if [ "$(mode)" = kind ]; then kind_up; return; fi
  if [ -f "$STATE/mode" ] && healthy 2>/dev/null; then
    log "already up"
    echo "$KUBECONFIG_PATH"
    return 0
  fi
  if [ -e "$STATE" ] || [ -e "$RUN" ]; then
    log "a stale or partial cluster is there; taking it down first"
    native_down
  fi
  native_up
  echo "$KUBECONFIG_PATH"
}

cmd_down() {
  if [ "$(mode)" = kind ]; then
    if command -v kind >/dev/null 2>&1; then kind delete cluster --name "$CLUSTER" >&2; fi
    rm -rf "$STATE"
    return 0
  fi
  if [ ! -e "$STATE" ] && [ ! -e "$RUN" ]; then log "nothing to stop"; return 0; fi
  native_down
  log "down"
}

cmd_restart_apiserver() {
  # What the operator, the sidecars and the kubelet meet when the control plane is upgraded or its node
  # reboots: the API server gone for a moment, then answering again from the same etcd.
  if [ "$(mode)" = kind ]; then
    docker exec "$CLUSTER-control-plane" sh -c 'crictl stop $(crictl ps -q --name kube-apiserver)' >&2
    wait_for 120 "kube-apiserver /readyz" kc get --raw /readyz
    return 0
  fi
  alive kube-apiserver || die "the cluster is not up"
  BIN=$(dirname "$(cut -d' ' -f2 "$PIDS/kube-apiserver.pid")")  # the binaries it runs now
  stop_component kube-apiserver
  start_apiserver
  log "kube-apiserver restarted"
}

cmd_status() {
  local m rc=0 c
  m=$(mode)
  echo "mode: $m"
  echo "kubeconfig: $KUBECONFIG_PATH"
  if [ "$m" = native ]; then
    for c in "${COMPONENTS[@]}"; do
      if alive "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(pid_of "$c")"
      else printf '%-24s stopped\n' "$c"; rc=1; fi
    done
  fi
  if [ -f "$KUBECONFIG_PATH" ] && kc get nodes -o wide 2>/dev/null; then
    kc get nodes -o 'jsonpath={range .items[*]}{.metadata.name}: nvidia.com/gpu={.status.allocatable.nvidia\.com/gpu}{"\n"}{end}'
    kc get nodes -o 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}' | grep -q True || rc=1
  else
    echo "API server: not reachable"
    rc=1
  fi
  return "$rc"
}

cmd_load() {
  [ "$#" -gt 0 ] || die "usage: $0 load ARCHIVE..."
  local a
  if [ "$(mode)" = kind ]; then
    for a in "$@"; do kind load image-archive "$a" --name "$CLUSTER" >&2; done
    return 0
  fi
  alive containerd || die "the cluster is not up"
  for a in "$@"; do
    [ -f "$a" ] || die "no such archive: $a"
    log "importing $a"
    ctr_import "$a"
  done
}

cmd_tag() {
  # tag SOURCE TARGET: give an image already on the node another name (a test makes an image appear late).
  [ "$#" -eq 2 ] || die "usage: $0 tag SOURCE TARGET"
  local src dst
  src=$(full_ref "$1") dst=$(full_ref "$2")
  if [ "$(mode)" = kind ]; then
    docker exec "$CLUSTER-control-plane" ctr -n k8s.io images tag "$src" "$dst" >&2
    return 0
  fi
  alive containerd || die "the cluster is not up"
  ctr --address "$SOCK" -n k8s.io images tag "$src" "$dst" >&2
}

full_ref() {
  # The name containerd keeps: hpo-trainer:e2e -> docker.io/library/hpo-trainer:e2e.
  case "$1" in
    */*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

main() {
  local cmd=${1:-}
  [ "$#" -gt 0 ] && shift
  case "$cmd" in
    up|down|load|smoke|restart-apiserver)
      # One up/down/load at a time (the lock is on this file: it leaves no trace).
      exec 9<"${BASH_SOURCE[0]}"
      flock 9
      ;;
  esac
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    load) cmd_load "$@" ;;
    tag) cmd_tag "$@" ;;
    kubeconfig) echo "$KUBECONFIG_PATH" ;;
    smoke) smoke ;;
    restart-apiserver) cmd_restart_apiserver ;;
    *) echo "usage: $0 up|down|status|load ARCHIVE...|tag SOURCE TARGET|kubeconfig|smoke|restart-apiserver" >&2
       exit 2 ;;
  esac
}

main "$@"
