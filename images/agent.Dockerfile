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
# measured with. Pin a digest here for reproducible builds. Without a registry, `npm run images`
# passes a locally built equivalent (images/base-node.Dockerfile).
ARG NODE_IMAGE=node:20-bookworm-slim

# Compiles the TypeScript sources to dist/ from the agent's own entry, bin/agent-main.ts, whose
# one command is `sluice agent`: neither this stage nor the image holds any of operator/
# (test/unit/import-boundaries.test.ts keeps the agent's code from importing it, through bin/
# too). Up to the npm install, this stage is the operator image's, and a layer cache shares it.
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Development dependencies too (esbuild, tsx); koffi ships its prebuilt native module and
# esbuild its platform binary as an optional dependency, so no install scripts run. Behind a
# TLS-intercepting proxy, pass the CA bundle that trusts it as the build secret
# `ca-certificates` (`--secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt`).
RUN --mount=type=secret,id=ca-certificates \
  if [ -f /run/secrets/ca-certificates ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-certificates; fi \
  && npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/build.ts ./scripts/
COPY bin ./bin
COPY common ./common
COPY node-agent ./node-agent
# The live view's page (copied into dist/web by the build).
COPY web ./web
RUN npm run build -- --entry bin/agent-main.ts

# Runtime dependencies only, exactly as locked.
FROM ${NODE_IMAGE} AS deps
WORKDIR /opt/sluice
COPY package.json package-lock.json ./
# `npm ls` fails the build if the tree is incomplete, which npm 10 can leave behind with exit
# status 0 after a network error. npm also leaves empty scope directories of the omitted
# development packages (@esbuild, @vitest, ...): removed, so the image lists only what it runs.
RUN --mount=type=secret,id=ca-certificates \
  if [ -f /run/secrets/ca-certificates ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-certificates; fi \
  && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm ls --omit=dev --all >/dev/null \
  && find node_modules -mindepth 1 -maxdepth 1 -type d -empty -delete \
  && npm cache clean --force

FROM ${NODE_IMAGE}
# clang:           compiles network functions to BPF objects (-target bpf) on the node; clang
#                  emits BTF itself, so no other LLVM tool is needed
# libbpf1:         libbpf.so.1, loaded through koffi for load, pin, attach, test-run
# libbpf-dev:      <bpf/bpf_helpers.h> and friends, included by every network function
# linux-libc-dev:  <linux/bpf.h>, <linux/if_ether.h>, ... and <asm/types.h> for BPF sources
# libc6-dev:       the multiarch include directory clang is pointed at
# tini:            PID 1 that forwards SIGTERM (chains stay pinned; the agent only stops)
# mount, stat (util-linux, coreutils; already in the base image): the chart's bpffs init container
RUN apt-get update \
  && apt-get install -y --no-install-recommends \
    clang libbpf1 libbpf-dev linux-libc-dev libc6-dev ca-certificates tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/sluice
COPY --from=deps /opt/sluice/node_modules ./node_modules
# package.json: "type": "module" for dist/; bin/sluice.mjs: the command, which runs dist/main.js.
COPY package.json ./
COPY bin/sluice.mjs ./bin/
COPY --from=build /src/dist ./dist
# C sources of the built-in network functions and the chain header every NF includes; the
# compiled code finds them as the bpf/ directory above dist/.
COPY bpf ./bpf
ENV NODE_ENV=production HOME=/tmp
# Root for bpffs and the host cache directory; capabilities are limited by the pod spec.
USER 0:0
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/sluice.mjs"]
CMD ["agent"]
