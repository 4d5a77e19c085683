#!/usr/bin/env bash
# The sluice demo (npm run demo): installs what is missing, then runs examples/demo/demo.ts.
#
#   npm run demo                     until Ctrl-C, which stops it and cleans everything up
#   npm run demo -- --duration 30    ends by itself after 30 s of traffic (also SLUICE_DEMO_DURATION)
#
# Needs root: it creates network namespaces, loads BPF programs and may install Debian packages.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [[ $(id -u) -ne 0 ]]; then
  echo "demo: run it as root (sudo npm run demo): it creates network namespaces and loads BPF programs" >&2
  exit 3
fi
# Node packages, clang, libbpf, iproute2, git and bpffs; not the Kubernetes test binaries.
bash "$root/scripts/setup.sh" --runtime
for tool in nsenter setpriv; do
  command -v "$tool" >/dev/null || { echo "demo: $tool is missing (Debian package util-linux)" >&2; exit 3; }
done
cd "$root"
exec node --import tsx examples/demo/demo.ts "$@"
