#!/usr/bin/env bash
# Idempotent setup for development and tests on a Debian machine, as root.
#
#   scripts/setup.sh                installs what is missing (npm packages, apt packages, bpffs,
#                                   the Kubernetes test binaries) and prints one line per step
#   scripts/setup.sh --testbin-dir  same for the test binaries only; prints their directory
#   scripts/setup.sh --runtime      what `sluice run` and the demo need (npm and apt packages,
#                                   bpffs), without the Kubernetes test binaries (no Go needed)
#
# Everything is skipped when already in place, so npm scripts can call this before each run.
# The test binaries are built from the Go modules pinned in test/testbin/*/go.mod and cached
# outside the repository, keyed by a hash of those files (SLUICE_CACHE, default ~/.cache/sluice).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}
apt_packages=(clang llvm libbpf-dev bpftool iproute2 git)
# Only the tests need these: the live view's browser test drives Debian's headless chromium.
test_apt_packages=(chromium)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

ensure_npm() {
  local stamp="$root/node_modules/.sluice-lock-sha256"
  local want
  want=$(sha256sum "$root/package-lock.json" | cut -d' ' -f1)
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return; fi
  say "npm ci"
  (cd "$root" && npm ci --no-audit --no-fund >&2)
  echo "$want" >"$stamp"
}

ensure_apt() {
  local missing=() p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  [[ $(id -u) -eq 0 ]] || die "missing Debian packages ${missing[*]}; run this script as root to install them"
  say "apt-get install ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

ensure_bpffs() {
  if [[ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" == "bpf_fs" ]]; then return; fi
  [[ $(id -u) -eq 0 ]] || die "bpffs is not mounted at /sys/fs/bpf; run this script as root to mount it"
  say "mount bpffs at /sys/fs/bpf"
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
}

# build_module NAME LDFLAGS PACKAGE... : builds the packages of test/testbin/NAME into a directory
# keyed by the hash of that module's go.mod, go.sum and link flags, and prints the directory.
build_module() {
  local name=$1 ldflags=$2; shift 2
  local mod="$root/test/testbin/$name"
  local key out
  key=$( (cat "$mod/go.mod" "$mod/go.sum"; echo "$ldflags") | sha256sum | cut -c1-16)
  out="$cache/testbin/$name-$key"
  if [[ ! -f "$out/.complete" ]]; then
    command -v go >/dev/null || die "Go is needed to build the Kubernetes test binaries ($name) and was not found on PATH"
    say "building $name test binaries into $out (first time only; this takes several minutes)"
    local start=$SECONDS
    rm -rf "$out" && mkdir -p "$out"
    (cd "$mod" && GOFLAGS=-mod=mod go build -trimpath -ldflags="-s -w $ldflags" -o "$out/" "$@") >&2 \
      || die "building $name test binaries failed (see the go output above)"
    touch "$out/.complete"
    # Builds for versions no longer pinned are dead weight in the cache.
    find "$cache/testbin" -maxdepth 1 -name "$name-*" ! -path "$out" -exec rm -rf {} + 2>/dev/null || true
    say "built $name in $((SECONDS - start)) s"
  fi
  echo "$out"
}

ensure_testbin() {
  local k8s etcd helm kwok bin
  mkdir -p "$cache/testbin"
  # One builder at a time: parallel test runs on a fresh machine wait for the first build.
  exec 9>"$cache/testbin/.lock"
  flock 9
  # Stamp the versions the binaries report (kubectl and helm compare them for version skew).
  local kv v=k8s.io/component-base/version
  kv=$(sed -n 's/^require k8s.io\/kubernetes v\([0-9]*\)\.\([0-9]*\)\..*/\1 \2/p' "$root/test/testbin/kubernetes/go.mod")
  local major=${kv% *} minor=${kv#* }
  local full
  full=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' "$root/test/testbin/kubernetes/go.mod")
  k8s=$(build_module kubernetes "-X $v.gitVersion=$full -X $v.gitMajor=$major -X $v.gitMinor=$minor -X $v.gitTreeState=clean" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kube-proxy \
    k8s.io/kubernetes/cmd/kubelet)
  etcd=$(build_module etcd "" go.etcd.io/etcd/server/v3)
  helm=$(build_module helm "" helm.sh/helm/v3/cmd/helm)
  # kwok keeps the scale tests' simulated Nodes alive. Its module requires the same versions of
  # the shared dependencies (client-go, apimachinery, grpc, ...) as the Kubernetes module, so a
  # cold build reuses the packages compiled for Kubernetes just before.
  kwok=$(build_module kwok "" sigs.k8s.io/kwok/cmd/kwok)
  bin="$cache/testbin/bin"
  mkdir -p "$bin"
  local k
  for k in kube-apiserver kubectl kube-controller-manager kube-scheduler kube-proxy kubelet; do
    ln -sfn "$k8s/$k" "$bin/$k"
  done
  ln -sfn "$etcd/server" "$bin/etcd"
  ln -sfn "$helm/helm" "$bin/helm"
  ln -sfn "$kwok/kwok" "$bin/kwok"
  local b
  for b in kube-apiserver kubectl kube-controller-manager kube-scheduler kube-proxy kubelet etcd helm kwok; do
    [[ -x "$bin/$b" ]] || die "test binary $b is missing from $bin"
  done
  echo "$bin"
}

case "${1:-}" in
  --testbin-dir)
    ensure_testbin
    ;;
  --runtime)
    ensure_npm
    ensure_apt
    ensure_bpffs
    ;;
  "")
    ensure_npm
    apt_packages+=("${test_apt_packages[@]}")
    ensure_apt
    ensure_bpffs
    bin=$(ensure_testbin)
    say "test binaries in $bin"
    ;;
  *)
    die "unknown option $1 (use --testbin-dir, --runtime or nothing)"
    ;;
esac
