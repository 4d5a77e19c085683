# syntax=docker/dockerfile:1
#
# The pod sandbox ("pause") image for a local cluster whose container runtime cannot pull one.
# The build context is a directory holding `pause`, a static binary built from pause/pause.c:
#
#   gcc -Os -static -s -o ctx/pause images/pause/pause.c
#   docker build -f images/pause.Dockerfile -t sluice-pause:3.10 ctx
#
# `npm run images` does both. Nothing else is in the image: no shell, no libc.
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
