# syntax=docker/dockerfile:1
#
# The sluice operator: Git sync, manifest apply and prune, chain planning, rollout, artifact
# server. Build from the repository root (the build context must be the whole repository):
#
#   docker build -f images/operator.Dockerfile -t sluice-operator:0.1.0 .
#
# It runs `node bin/sluice.mjs operator` as an unprivileged user on a read-only root filesystem;
# the Helm chart mounts writable emptyDirs at /var/lib/sluice (clones, artifacts) and /tmp (HOME
# for ssh, and the temporary directory for ssh keys).

# Node 20 on Debian 12 (bookworm). Pin a digest here for reproducible builds. Without a
# registry, `npm run images` passes a locally built equivalent (images/base-node.Dockerfile).
ARG NODE_IMAGE=node:20-bookworm-slim

# Compiles the TypeScript sources to dist/ (`npm run build`). This stage is the same in both
# images, so a builder with a layer cache runs it once.
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
COPY operator ./operator
COPY node-agent ./node-agent
# The live view's page (copied into dist/web by the build).
COPY web ./web
RUN npm run build

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
# git:             GitSource sync (simple-git runs the git binary)
# openssh-client:  ssh:// and scp-like repository URLs
# ca-certificates: https:// repositories
# tini:            PID 1 that forwards SIGTERM (the operator then releases its Lease) and reaps
#                  the git and ssh processes that outlive their parent
RUN apt-get update \
  && apt-get install -y --no-install-recommends git openssh-client ca-certificates tini \
  && rm -rf /var/lib/apt/lists/*
# ssh refuses to run for a uid without a passwd entry; this one has its home in the /tmp volume.
RUN groupadd --gid 65532 sluice \
  && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin sluice
WORKDIR /opt/sluice
COPY --from=deps /opt/sluice/node_modules ./node_modules
# package.json: "type": "module" for dist/; bin/sluice.mjs: the command, which runs dist/main.js.
COPY package.json ./
COPY bin/sluice.mjs ./bin/
COPY --from=build /src/dist ./dist
ENV NODE_ENV=production HOME=/tmp
USER 65532:65532
# Artifacts, Git webhooks, /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/sluice.mjs"]
CMD ["operator"]
