# syntax=docker/dockerfile:1
#
# The sluice operator: Git sync, manifest apply and prune, chain planning, rollout, artifact
# server. Build from the repository root (the build context must be the whole repository):
#
#   docker build -f images/operator.Dockerfile -t sluice-operator:0.1.0 .
#
# It runs `node bin/sluice.mjs operator` as an unprivileged user on a read-only root filesystem;
# the Helm chart mounts writable emptyDirs at /var/lib/sluice (clones, artifacts) and /tmp.

# Node 20 on Debian 12 (bookworm). Pin a digest here for reproducible builds.
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /opt/sluice
COPY package.json package-lock.json ./
# Runtime dependencies only, exactly as locked. tsx is one of them: it runs the TypeScript
# sources directly, so there is no build step. No install scripts run (package.json denies them;
# koffi ships its prebuilt native module in the package).
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force

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
COPY package.json tsconfig.json ./
COPY bin ./bin
COPY common ./common
COPY operator ./operator
ENV NODE_ENV=production HOME=/tmp
USER 65532:65532
# Artifacts, Git webhooks, /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/sluice.mjs"]
CMD ["operator"]
