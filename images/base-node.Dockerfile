# syntax=docker/dockerfile:1
#
# A stand-in for `node:20-bookworm-slim` where no image registry is reachable: Debian 12
# (bookworm) plus Node.js 20 in /usr/local, like the official image. `npm run images` builds it
# as `localhost/sluice-base-node:20-bookworm` and passes it to the other Dockerfiles as
# NODE_IMAGE. The build context (prepared by scripts/images.sh, outside the repository) holds:
#
#   rootfs.tar  `debootstrap --variant=minbase bookworm`, apt lists and caches removed
#   node.tar    usr/local/{bin,lib,include,share} of the official Node.js linux-x64 build and npm
#
# ADD unpacks local tar archives. Two layers, so a Node.js update reuses the Debian layer.
FROM scratch
ADD rootfs.tar /
ADD node.tar /
# The official image's unprivileged user, for scripts that expect it.
RUN groupadd --gid 1000 node \
  && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["node"]
