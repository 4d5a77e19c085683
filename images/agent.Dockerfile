# syntax=docker/dockerfile:1
#
# The sluice node agent: fetches artifacts, compiles network functions with clang, loads them
# through libbpf (FFI), self-tests them and switches chains atomically. Build from the
# repository root (the build context must be the whole repository):
#
#   docker build -f images/agent.Dockerfile -t sluice-agent:0.1.0 .
#
# It runs `node bin/sluice.mjs agent` as uid 0 with only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN
# (the Helm chart's DaemonSet drops everything else), in the host network namespace, with the
# host's /sys/fs/bpf and a host cache directory mounted.

# Node 20 on Debian 12 (bookworm): its clang 14 and libbpf 1.1 are the toolchain sluice is
# measured with. Pin a digest here for reproducible builds.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /opt/sluice
COPY package.json package-lock.json ./
# Runtime dependencies only, exactly as locked; tsx runs the TypeScript sources, koffi ships its
# prebuilt native module, so no install scripts run.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

FROM ${NODE_IMAGE}
# clang, llvm:     compile network functions to BPF objects (-target bpf) on the node
# libbpf1:         libbpf.so.1, loaded through koffi for load, pin, attach, test-run
# libbpf-dev:      <bpf/bpf_helpers.h> and friends, included by every network function
# linux-libc-dev:  <linux/bpf.h>, <linux/if_ether.h>, ... and <asm/types.h> for BPF sources
# libc6-dev:       the multiarch include directory clang is pointed at
# tini:            PID 1 that forwards SIGTERM (chains stay pinned; the agent only stops)
# mount, stat (util-linux, coreutils; already in the base image): the chart's bpffs init container
RUN apt-get update \
  && apt-get install -y --no-install-recommends \
    clang llvm libbpf1 libbpf-dev linux-libc-dev libc6-dev ca-certificates tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sluice
COPY --from=deps /opt/sluice/node_modules ./node_modules
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY common ./common
# `sluice agent` talks to the API server through the operator's small Kubernetes client.
COPY operator ./operator
COPY node-agent ./node-agent
# C sources of the built-in network functions and the chain header every NF includes.
COPY bpf ./bpf
ENV NODE_ENV=production HOME=/tmp
# Root for bpffs and the host cache directory; capabilities are limited by the pod spec.
USER 0:0
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/sluice.mjs"]
CMD ["agent"]
