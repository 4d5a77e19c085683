#!/usr/bin/env bash
# A local one-node Kubernetes cluster whose node really runs pods, as root, for the `deployed`
# tests and for trying the Helm chart by hand:
#
#   scripts/cluster.sh up      starts (or reuses, when healthy) etcd, kube-apiserver,
#                              kube-controller-manager, kube-scheduler, kube-proxy (nftables),
#                              containerd with runc and the CNI bridge plugin, and a kubelet;
#                              imports the images of `npm run images` into containerd; prints the
#                              admin kubeconfig's path as the last line of stdout
#   scripts/cluster.sh down    stops it and undoes everything `up` did to the host
#   scripts/cluster.sh status  exits 0 when the cluster is up and healthy
#   scripts/cluster.sh kubeconfig  prints where `up` writes the admin kubeconfig
#
# The Kubernetes binaries are the test binaries (`scripts/setup.sh --testbin-dir`); containerd
# 1.6, runc, the CNI plugins and nftables come from Debian and are installed when missing.
# Everything lives under ${SLUICE_CACHE:-~/.cache/sluice}/cluster (files) and /run/sluice-kind
# (sockets, network namespace mounts); every host object carries the prefix `slk`:
#
#   node            slk-node, IP 10.237.0.1 on the interface slk0 (not loopback: the
#                   apiserver refuses to advertise a loopback address, and pods must reach it)
#   apiserver       https://10.237.0.1:6443, reached by pods through the `kubernetes` Service
#   pods            10.238.0.0/24 on the bridge slk-cni0 (no masquerading: pods only talk to the
#                   node and to Services)
#   Services        10.239.0.0/24 (kubernetes = 10.239.0.1), kube-proxy's nftables tables
#   cgroups         /sys/fs/cgroup/<controller>/slk (the kubelet's cgroupRoot)
#
# cgroup v1. Kubelets from 1.35 on refuse a v1 hierarchy unless the KubeletConfiguration says
# `failCgroupV1: false`. What else the kubelet needs on such a host (see write_kubelet_config):
# `cgroupDriver: cgroupfs` (no systemd), `failSwapOn: false`, `evictionHard: {}` (no eviction on a
# shared disk), image GC off (the images are imported, not pullable), `makeIPTablesUtilChains:
# false`. containerd needs `restrict_oom_score_adj = true` where CAP_SYS_RESOURCE is withheld
# (else every sandbox fails with "can't get final child's PID from pipe: EOF"), and a local pause
# image (no registry).
#
# `down` removes: the processes (and containerd's shims and containers), the mounts below its
# directories (kubelet volumes, container root filesystems, network namespaces), the pods'
# network namespaces and veths, slk-cni0 and slk0, kube-proxy's nftables tables, network
# namespaces and interfaces named slk*, the chains the deployed tests pinned under
# /sys/fs/bpf/sluice/slk-*, the shared propagation of /sys/fs/bpf, the sysctls the kubelet,
# kube-proxy and the bridge plugin change (restored to the values before `up`), the cgroups,
# and the host directories the components create when they did not exist before.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
state=$cache/cluster
run=/run/sluice-kind

node_name=slk-node
node_ip=10.237.0.1
node_if=slk0
pod_cidr=10.238.0.0/24
bridge=slk-cni0
service_cidr=10.239.0.0/24
api_port=6443
api_url=https://$node_ip:$api_port
etcd_url=http://127.0.0.1:23790
etcd_peer_url=http://127.0.0.1:23800
cgroup_root=slk
containerd_sock=$run/containerd/containerd.sock
pause_image=localhost/sluice-pause:3.10
apt_packages=(containerd runc containernetworking-plugins nftables iptables openssl util-linux curl)
# Pins of chains applied in namespaces named slk-* (pin directory "<namespace>_<chain>").
bpffs_pins=/sys/fs/bpf/sluice
# The kernel settings changed by the kubelet (setupKernelTunables), kube-proxy and the CNI bridge.
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet)
# Host paths the components write outside their configured directories.
host_paths=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd
  /var/lib/containerd /var/cache/sluice)
components=(etcd kube-apiserver containerd kubelet kube-proxy kube-controller-manager kube-scheduler)

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------------------
# Prerequisites

ensure_apt() {
  local missing=() p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  say "apt-get install ${missing[*]}"
  apt-get update -qq >&2
  # policy-rc.d 101: packages must not start their own daemons (containerd's unit) here.
  local policy=/usr/sbin/policy-rc.d made_policy=false
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || { $made_policy && rm -f "$policy"; die "apt-get install ${missing[*]} failed"; }
  $made_policy && rm -f "$policy"
  return 0
}

testbin_dir() {
  local dir
  dir=$(bash "$root/scripts/setup.sh" --testbin-dir | tail -n1) || die "scripts/setup.sh --testbin-dir failed"
  local b
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl; do
    [[ -x "$dir/$b" ]] || die "test binary $b is missing from $dir (scripts/setup.sh --testbin-dir builds it)"
  done
  echo "$dir"
}

require_host() {
  [[ $(id -u) -eq 0 ]] || die "the local cluster needs root (kubelet, containerd, network setup)"
  [[ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" == bpf_fs ]] \
    || die "bpffs is not mounted at /sys/fs/bpf (scripts/setup.sh mounts it)"
  [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] \
    || die "no cgroup hierarchy under /sys/fs/cgroup"
  local f
  for f in /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback; do
    [[ -x $f ]] || die "CNI plugin $f is missing (Debian package containernetworking-plugins)"
  done
}

# ------------------------------------------------------------------------------------------
# Processes: one pid file each; a pid counts only while its command line is still ours.

pidfile() { echo "$state/pids/$1.pid"; }

alive() {
  local f pid
  f=$(pidfile "$1")
  [[ -f $f ]] || return 1
  pid=$(cat "$f")
  [[ -r /proc/$pid/cmdline ]] || return 1
  grep -qaF -- "$1" "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

# start NAME BINARY ARGS... : runs the daemon in its own session with its log in logs/NAME.log.
start() {
  local name=$1; shift
  mkdir -p "$state/pids" "$state/logs"
  # 8>&-: the daemons must not inherit (and hold) the script's lock.
  setsid "$@" </dev/null >>"$state/logs/$name.log" 2>&1 8>&- &
  echo $! >"$(pidfile "$name")"
}

stop() {
  local name=$1 pid i
  pid=$(alive "$name") || { rm -f "$(pidfile "$name")"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [[ -d /proc/$pid ]] || break
    sleep 0.1
  done
  [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
  rm -f "$(pidfile "$name")"
}

log_tail() { tail -n "${2:-25}" "$state/logs/$1.log" 2>/dev/null | sed "s/^/  $1: /" >&2 || true; }

# wait_for WHAT SECONDS COMPONENT COMMAND... : polls COMMAND until it succeeds; fails with the
# component's log if it dies or the time runs out.
wait_for() {
  local what=$1 seconds=$2 component=$3; shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! alive "$component" >/dev/null; then
      log_tail "$component" 40
      die "$component exited before $what (log: $state/logs/$component.log)"
    fi
    if ((SECONDS > deadline)); then
      log_tail "$component" 40
      die "$what: not within $seconds s (log: $state/logs/$component.log)"
    fi
    sleep 0.5
  done
}

kubectl_admin() { "$bin/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

# ------------------------------------------------------------------------------------------
# Certificates and kubeconfigs

write_pki() {
  local pki=$state/pki
  [[ -f $pki/.complete ]] && return
  rm -rf "$pki" && mkdir -p "$pki"
  (
    cd "$pki"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 30 -subj /CN=sluice-kind-ca \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    # sign NAME SUBJECT EXTENSIONS
    sign() {
      openssl req -new "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr" "$1.ext"
    }
    local client="keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    sign apiserver /CN=kube-apiserver "subjectAltName=IP:$node_ip,IP:${service_cidr%.0/*}.1,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
    sign kubelet-serving "/CN=$node_name" "subjectAltName=IP:$node_ip,DNS:$node_name
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth"
    sign admin "/O=system:masters/CN=sluice-kind-admin" "$client"
    sign kubelet "/O=system:nodes/CN=system:node:$node_name" "$client"
    sign kube-proxy /CN=system:kube-proxy "$client"
    sign kube-controller-manager /CN=system:kube-controller-manager "$client"
    sign kube-scheduler /CN=system:kube-scheduler "$client"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key 2>/dev/null
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 600 ./*.key
  )
  touch "$pki/.complete"
}

# kubeconfig USER : a kubeconfig for the client certificate pki/USER.{crt,key}.
write_kubeconfig() {
  local user=$1 file=$state/kubeconfig${1:+-$1}
  [[ $user == admin ]] && file=$state/kubeconfig
  umask 077
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sluice-kind
  cluster:
    server: $api_url
    certificate-authority-data: $(base64 -w0 "$state/pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$state/pki/$user.crt")
    client-key-data: $(base64 -w0 "$state/pki/$user.key")
contexts:
- name: sluice-kind
  context:
    cluster: sluice-kind
    user: $user
current-context: sluice-kind
EOF
  umask 022
}

# ------------------------------------------------------------------------------------------
# Host changes that `down` undoes: recorded once, before anything is changed.

record_host() {
  [[ -f $state/host/recorded ]] && return
  mkdir -p "$state/host"
  local s
  for s in "${sysctls[@]}"; do
    sysctl -n "$s" >"$state/host/sysctl.$s" 2>/dev/null || rm -f "$state/host/sysctl.$s"
  done
  local p
  : >"$state/host/created-paths"
  for p in "${host_paths[@]}" "$bpffs_pins"; do
    [[ -e $p ]] || echo "$p" >>"$state/host/created-paths"
  done
  findmnt -n -o PROPAGATION /sys/fs/bpf >"$state/host/bpffs-propagation"
  touch "$state/host/recorded"
}

restore_host() {
  [[ -d $state/host ]] || return 0
  local f s
  for f in "$state/host"/sysctl.*; do
    [[ -f $f ]] || continue
    s=${f##*/sysctl.}
    sysctl -q -w "$s=$(cat "$f")" >/dev/null 2>&1 || say "could not restore $s"
  done
  if [[ -f $state/host/bpffs-propagation ]] && ! grep -q shared "$state/host/bpffs-propagation"; then
    mount --make-private /sys/fs/bpf 2>/dev/null || true
  fi
  local p
  if [[ -f $state/host/created-paths ]]; then
    while read -r p; do
      [[ -n $p && -e $p ]] || continue
      umount_below "$p"
      rm -rf "$p"
    done <"$state/host/created-paths"
  fi
}

# ------------------------------------------------------------------------------------------
# Network: the node's address, the CNI configuration

setup_network() {
  # A veth pair whose ends both stay on the host: an interface of its own for the node's address
  # (kernels without the dummy driver have veth).
  if ! ip link show "$node_if" >/dev/null 2>&1; then
    ip link add "$node_if" type veth peer name "${node_if}p"
  fi
  ip addr replace "$node_ip/32" dev "$node_if"
  ip link set "${node_if}p" up
  ip link set "$node_if" up
  mkdir -p "$state/cni/net.d" "$state/cni/ipam"
  cat >"$state/cni/net.d/10-slk.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "slk",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$state/cni/ipam",
        "ranges": [[{ "subnet": "$pod_cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF
}

# ------------------------------------------------------------------------------------------
# Components

start_etcd() {
  alive etcd >/dev/null && return
  start etcd "$bin/etcd" --name=slk --data-dir="$state/etcd" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="$etcd_peer_url" --initial-advertise-peer-urls="$etcd_peer_url" \
    --initial-cluster="slk=$etcd_peer_url" --unsafe-no-fsync --log-level=warn
  wait_for "etcd health" 60 etcd curl -fsS "$etcd_url/health"
}

start_apiserver() {
  alive kube-apiserver >/dev/null && return
  local pki=$state/pki
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="$etcd_url" \
    --bind-address="$node_ip" --advertise-address="$node_ip" --secure-port="$api_port" \
    --cert-dir="$state/apiserver" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" \
    --allow-privileged=true \
    --profiling=false
  wait_for "kube-apiserver /readyz" 90 kube-apiserver \
    curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$api_url/readyz"
}

start_controllers() {
  local pki=$state/pki
  if ! alive kube-controller-manager >/dev/null; then
    start kube-controller-manager "$bin/kube-controller-manager" \
      --kubeconfig="$state/kubeconfig-kube-controller-manager" \
      --authentication-kubeconfig="$state/kubeconfig-kube-controller-manager" \
      --authorization-kubeconfig="$state/kubeconfig-kube-controller-manager" \
      --bind-address=127.0.0.1 --secure-port=10257 \
      --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
      --use-service-account-credentials=true \
      --service-cluster-ip-range="$service_cidr" \
      --leader-elect=false --profiling=false
  fi
  if ! alive kube-scheduler >/dev/null; then
    start kube-scheduler "$bin/kube-scheduler" \
      --kubeconfig="$state/kubeconfig-kube-scheduler" \
      --authentication-kubeconfig="$state/kubeconfig-kube-scheduler" \
      --authorization-kubeconfig="$state/kubeconfig-kube-scheduler" \
      --bind-address=127.0.0.1 --secure-port=10259 \
      --leader-elect=false --profiling=false
  fi
}

start_proxy() {
  alive kube-proxy >/dev/null && return
  cat >"$state/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: $state/kubeconfig-kube-proxy
hostnameOverride: $node_name
clusterCIDR: $pod_cidr
# Node ports only on the node's own address, health and metrics on loopback.
nodePortAddresses: ["$node_ip/32"]
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Leave the host's conntrack table settings alone (zero: do not change).
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
  start kube-proxy "$bin/kube-proxy" --config="$state/kube-proxy.yaml"
}

start_containerd() {
  alive containerd >/dev/null && return
  mkdir -p "$state/containerd" "$run/containerd"
  # containerd 1.6 (config version 2). restrict_oom_score_adj: this host withholds
  # CAP_SYS_RESOURCE, so runc may not lower a container's oom_score_adj below its own.
  # netns_mounts_under_state_dir: pod network namespaces live under $run, not /run/netns.
  cat >"$state/containerd/config.toml" <<EOF
version = 2
root = "$state/containerd/root"
state = "$run/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$run/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$state/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$state/cni/net.d"
EOF
  start containerd containerd --config "$state/containerd/config.toml"
  wait_for "containerd socket" 60 containerd ctr --address "$containerd_sock" version
}

ctr_k8s() { ctr --address "$containerd_sock" -n k8s.io "$@"; }

# Imports the OCI archives `npm run images` wrote, each only when it changed since the last import.
import_images() {
  local dir=$cache/images archive stamp id
  [[ -f $dir/sluice-pause.tar ]] \
    || die "no images in $dir: run \`npm run images\` first (it builds sluice-operator, sluice-agent and the pause image)"
  mkdir -p "$state/imported"
  for archive in "$dir"/sluice-*.tar; do
    stamp=$state/imported/$(basename "$archive").id
    id=$(cat "$archive.id" 2>/dev/null || sha256sum "$archive" | cut -d' ' -f1)
    [[ -f $stamp && "$(cat "$stamp")" == "$id" ]] && continue
    say "importing $(basename "$archive") into containerd"
    ctr_k8s images import "$archive" >&2 || die "ctr images import $archive failed"
    echo "$id" >"$stamp"
  done
  ctr_k8s images ls -q | grep -x "$pause_image" >/dev/null \
    || die "the pause image $pause_image is not in containerd after the import"
}

write_kubelet_config() {
  mkdir -p "$state/kubelet" "$state/kubelet-pki" "$state/pod-logs"
  local resolv=/etc/resolv.conf
  [[ -f $resolv ]] || { resolv=$state/resolv.conf; : >"$resolv"; }
  # Every line below the first two was a blocker on this kind of host (cgroup v1, no systemd,
  # CAP_SYS_RESOURCE withheld, a disk shared with other work).
  cat >"$state/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Kubernetes 1.35+ refuses cgroup v1 unless told otherwise; this host has only v1 controllers.
failCgroupV1: false
# No systemd here: the kubelet and runc manage cgroupfs directly, below /slk.
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup_root
failSwapOn: false
# No eviction and no image garbage collection: the images are imported, not pullable again,
# and the disk is shared with other work.
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# kube-proxy (nftables) owns the packet filter; the kubelet adds no iptables chains.
makeIPTablesUtilChains: false
resolvConf: $resolv
containerRuntimeEndpoint: unix://$containerd_sock
podLogsDir: $state/pod-logs
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $state/pki/kubelet-serving.crt
tlsPrivateKeyFile: $state/pki/kubelet-serving.key
# A test node: the API server is the only client and authenticates with a client certificate;
# a production node uses webhook authentication and authorization instead.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
  x509:
    clientCAFile: $state/pki/ca.crt
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
maxPods: 50
serializeImagePulls: false
EOF
}

# The directories of the kubelet's cgroupRoot: one per controller hierarchy on cgroup v1, one
# directory on a unified (v2) hierarchy.
cgroup_dirs() {
  if [[ "$(stat -f -c %T /sys/fs/cgroup)" == cgroup2fs ]]; then
    echo "/sys/fs/cgroup/$cgroup_root"
    return
  fi
  local c
  for c in /sys/fs/cgroup/*/; do
    c=${c%/}
    [[ -f $c/cgroup.procs && ${c##*/} != unified ]] && echo "$c/$cgroup_root"
  done
  return 0
}

setup_cgroups() {
  local dir
  for dir in $(cgroup_dirs); do
    mkdir -p "$dir"
    # v1 cpuset: a new cgroup has no CPUs or memory nodes until given its parent's.
    if [[ -f ${dir%/*}/cpuset.cpus && ! -f ${dir%/*}/cgroup.controllers ]]; then
      [[ -n "$(cat "$dir/cpuset.cpus")" ]] || cat "${dir%/*}/cpuset.cpus" >"$dir/cpuset.cpus"
      [[ -n "$(cat "$dir/cpuset.mems")" ]] || cat "${dir%/*}/cpuset.mems" >"$dir/cpuset.mems"
    fi
  done
}

start_kubelet() {
  alive kubelet >/dev/null && return
  write_kubelet_config
  setup_cgroups
  start kubelet "$bin/kubelet" --config="$state/kubelet/config.yaml" \
    --kubeconfig="$state/kubeconfig-kubelet" \
    --root-dir="$state/kubelet" --cert-dir="$state/kubelet-pki" \
    --hostname-override="$node_name" --node-ip="$node_ip" --v=1
}

node_ready() {
  [[ "$(kubectl_admin get node "$node_name" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

default_sa() { kubectl_admin -n default get serviceaccount default; }

healthy() {
  local c
  for c in "${components[@]}"; do alive "$c" >/dev/null || return 1; done
  [[ -f $state/kubeconfig ]] && node_ready
}

# ------------------------------------------------------------------------------------------
# up / down

up() {
  require_host
  mkdir -p "$cache"
  # One `up` or `down` at a time; the daemons never inherit this descriptor (see start).
  exec 8>"$cache/cluster.lock"
  flock 8
  ensure_apt
  bin=$(testbin_dir)
  local begin=$SECONDS
  if healthy; then
    # Images rebuilt since the last `up` are imported again; nothing else changes.
    import_images
    say "reusing the healthy cluster ($api_url, node $node_name)"
    echo "$state/kubeconfig"
    return
  fi
  if [[ -d $state/pids || -d $state/host ]]; then
    say "a previous cluster is not healthy; removing it first"
    teardown
  fi
  mkdir -p "$state" "$run"
  echo "$bin" >"$state/testbin"
  record_host
  write_pki
  local u
  for u in admin kubelet kube-proxy kube-controller-manager kube-scheduler; do write_kubeconfig "$u"; done
  # Bidirectional mount propagation (the chart's bpffs init container) needs a shared source.
  mount --make-shared /sys/fs/bpf
  setup_network
  start_etcd
  start_apiserver
  start_controllers
  start_containerd
  import_images
  start_proxy
  start_kubelet
  wait_for "node $node_name Ready" 180 kubelet node_ready
  # Healthy once it has seen its Node and written the Services' rules.
  wait_for "kube-proxy /healthz" 60 kube-proxy curl -fsS http://127.0.0.1:10256/healthz
  wait_for "the default ServiceAccount" 60 kube-controller-manager default_sa
  say "up in $((SECONDS - begin)) s: $api_url, node $node_name ($node_ip), pods $pod_cidr, services $service_cidr"
  echo "$state/kubeconfig"
}

# umount_below DIR : unmounts every mount at or below DIR, deepest first.
umount_below() {
  local dir=$1 m
  [[ -n $dir ]] || return 0
  findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
}

# Pids of containerd's shims for this containerd (their command line names its socket).
shim_pids() {
  local f
  for f in $(grep -lsF -- "$containerd_sock" /proc/[0-9]*/cmdline); do
    grep -qsF containerd-shim "$f" && f=${f#/proc/} && echo "${f%/cmdline}"
  done
  return 0
}

teardown() {
  bin=${bin:-$(cat "$state/testbin" 2>/dev/null || true)}
  # Pods first, while the kubelet still runs: it stops them through containerd, which runs the
  # CNI DEL of each sandbox. Controllers first, so nothing recreates them.
  stop kube-controller-manager
  stop kube-scheduler
  if alive kubelet >/dev/null && alive kube-apiserver >/dev/null && [[ -x ${bin:-}/kubectl ]]; then
    kubectl_admin delete pods --all --all-namespaces --grace-period=5 --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 40))
    while ((SECONDS < deadline)) && [[ -n "$(ctr_k8s tasks ls -q 2>/dev/null)" ]]; do sleep 1; done
  fi
  stop kubelet
  stop kube-proxy
  # Whatever is still running in containerd: killed and removed.
  if alive containerd >/dev/null; then
    local id
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 1
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  local pid
  for pid in $(shim_pids); do kill -KILL "$pid" 2>/dev/null || true; done
  stop kube-apiserver
  stop etcd

  # Packet filter: kube-proxy's own tables only.
  local family
  for family in ip ip6 inet; do
    nft delete table "$family" kube-proxy 2>/dev/null || true
  done
  # Mounts: container root filesystems, shm, kubelet volumes, pod network namespaces.
  umount_below "$run"
  umount_below "$state"
  # Interfaces: veths still on the bridge, the bridge, the node address, slk* test links.
  local link
  for link in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
    ip link del "$link" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1 | grep '^slk' || true); do
    ip link del "$link" 2>/dev/null || true
  done
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep '^slk' || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  # Chains pinned by the deployed tests (namespaces slk-*), and their XDP links with them.
  rm -rf "$bpffs_pins"/slk-* 2>/dev/null || true
  # CNI results containerd cached for this network.
  rm -f /var/lib/cni/results/slk-* 2>/dev/null || true
  # cgroups, deepest first (empty by now).
  local c
  # On a hybrid host runc also mirrors the tree into the v2 hierarchy at /sys/fs/cgroup/unified.
  for c in $(cgroup_dirs) "/sys/fs/cgroup/unified/$cgroup_root"; do
    [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  restore_host
  if [[ -f $state/host/created-paths ]] && grep -qx "$bpffs_pins" "$state/host/created-paths"; then
    rmdir "$bpffs_pins" 2>/dev/null || true
  fi
  # The logs of the last cluster stay for a post-mortem; everything else goes.
  if [[ -d $state/logs ]]; then
    rm -rf "$cache/cluster-last-logs" && mv "$state/logs" "$cache/cluster-last-logs"
  fi
  rm -rf "$state" "$run"
}

down() {
  [[ $(id -u) -eq 0 ]] || die "the local cluster needs root"
  mkdir -p "$cache"
  exec 8>"$cache/cluster.lock"
  flock 8
  if [[ ! -d $state && ! -d $run ]]; then
    say "no cluster to remove"
    return
  fi
  teardown
  say "removed (logs of the last run: $cache/cluster-last-logs)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status)
    bin=$(cat "$state/testbin" 2>/dev/null) || exit 1
    healthy
    ;;
  kubeconfig) echo "$state/kubeconfig" ;;
  *) die "usage: scripts/cluster.sh up | down | status | kubeconfig" ;;
esac
