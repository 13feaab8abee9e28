# syntax=docker/dockerfile:1
#
# Lattice runtime image. Node 24 strips TypeScript types itself, so there is no build step: the image ships
# the .ts sources the tests ran, plus production dependencies. Which services a container runs is chosen at
# run time with SERVICES (e.g. SERVICES=api for the gateway role, SERVICES=products for the catalog role);
# without it every service in services/ starts. Everything else is configured through the environment (see
# moleculer.config.ts), and the same image runs as gateway, catalog or edge node.
#
# The container needs no writable path: the root filesystem can be read-only (Kubernetes:
# readOnlyRootFilesystem with an emptyDir on /tmp, as k8s/ does; Docker: --read-only --tmpfs /tmp).
# test/integration/delivery/image.test.ts runs this file's ENTRYPOINT, CMD, ENV and USER outside Docker.

# glibc (Debian slim) rather than Alpine: libsodium's prebuilt addon, which seals cluster packets at about half the
# cost of Node's OpenSSL path, is built for glibc only, and every start-up, memory and throughput figure in the
# README was measured on glibc. The price is a larger base than Alpine's (README, Delivery).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only. Dev dependencies include `node` itself (the toolchain's own Node 24): the
# base image provides Node here. No runtime dependency has an install script, so none is run.
# sodium-native ships prebuilt binaries for a dozen platforms (18 MB); only Linux glibc ones (x64, arm64) can load
# here, and only its Node builds (the .bare files are for another runtime).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force \
 && find node_modules/sodium-native/prebuilds -mindepth 1 -maxdepth 1 ! -name 'linux-x64' ! -name 'linux-arm64' -exec rm -rf {} + \
 && find node_modules/sodium-native/prebuilds -name '*.bare' -delete

FROM ${NODE_IMAGE}
# tini as PID 1. The kernel gives PID 1 no default signal actions: a node process there ignores SIGTERM until
# Moleculer installs its handler (so a stop during start-up waits for the kill timeout), and nothing reaps
# orphaned children. tini forwards signals to node, reaps zombies and exits with node's exit code.
# (`docker run --init` does the same with Docker's own tini, but Kubernetes has no such switch.)
RUN apt-get update && apt-get install -y --no-install-recommends tini && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /opt/yarn-* \
           /usr/local/bin/yarn /usr/local/bin/yarnpkg

WORKDIR /app
ENV NODE_ENV=production \
    PATH=/app/node_modules/.bin:$PATH \
    PORT=3000 \
    LATTICE_OPS_PORT=3001

COPY --from=deps /app/node_modules ./node_modules
# What reaches the build context is decided by .dockerignore (an allowlist).
COPY . .

# Node's compile cache, filled once here rather than at every start (lib/compile-cache.cli.ts): a node then
# compiles none of its modules from source and never loads the TypeScript stripper, which saves about 200 ms
# of start-up CPU and 25 MiB of memory (README, Footprint). Node keys the cache by user id, so it is filled as
# the USER below, then owned by root and read-only. A process run as another user compiles as usual.
RUN node lib/compile-cache.cli.ts /app/.compile-cache --user 1000:1000
ENV NODE_COMPILE_CACHE=/app/.compile-cache

# A numeric user, so Kubernetes can check runAsNonRoot without reading /etc/passwd. Files stay owned by
# root: the process cannot modify its own code.
USER 1000:1000

# 3000: HTTP gateway (when the api service runs). 3001: /live, /ready, /metrics.
EXPOSE 3000 3001

LABEL org.opencontainers.image.title="lattice" \
      org.opencontainers.image.description="Lattice: an opinionated Moleculer 0.15 distribution" \
      org.opencontainers.image.source="https://github.com/lattice/lattice" \
      io.lattice.image="ghcr.io/lattice/lattice"

# For Docker and Compose; Kubernetes ignores it and uses the probes in k8s/. Slim images have no curl:
# Node's own fetch asks /live on the ops port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.LATTICE_OPS_PORT || 3001) + '/live').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

ENTRYPOINT ["/usr/bin/tini", "--", "moleculer-runner-esm", "--config", "moleculer.config.ts", "--mask", "**/*.service.ts"]
CMD ["services"]
