# syntax=docker/dockerfile:1
#
# tollgate's image: `tollgate serve`, the ext_authz gRPC server (:9001) and the OpenAI-compatible gateway
# (:4000) in one process. Envoy runs beside it (envoy/envoy.yaml; charts/tollgate runs both in one pod).
#
#   docker build -t tollgate:0.1.0 .
#   docker run --rm -p 4000:4000 -p 9001:9001 tollgate:0.1.0          # embedded default config
#   docker run --rm -p 4000:4000 -p 9001:9001 -e TOLLGATE_MASTER_KEY \
#     -v "$PWD/config.yaml:/etc/tollgate/config.yaml:ro" tollgate:0.1.0 serve --config /etc/tollgate/config.yaml

# Node 22 LTS (Node 20 reached end of life on 2026-04-30). package.json's engines stays >=20.19: the code runs on both.
ARG NODE_VERSION=22

# ---- build: every dependency, then tsc (src/ only: test/ and bench/ are not in the build context)
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No dependency needs an install script to compile: protobufjs's only prints a version warning, and a
# benchmark-only dev dependency runs patch-package.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, installed here (no devDependency is copied over), and the compiled code
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && rm -rf /root/.npm
# tollgate reads these relative to its code (dist/src/...): package.json (its version), protos/ (ext_authz and
# gRPC health), migrations/ (the store's schema); bin/ is the entry point.
COPY --from=build /src/dist/src ./dist/src
COPY bin ./bin
COPY migrations ./migrations
COPY protos ./protos
COPY schema ./schema
# The code stays root-owned and read-only to the process; the two data directories are its own:
#   /app/.tollgate     embedded PGlite and the generated master key of the no-config default (./.tollgate)
#   /var/lib/tollgate  general_settings.data_dir in charts/tollgate (an emptyDir there)
RUN mkdir -p /app/.tollgate /var/lib/tollgate \
  && chown node:node /app/.tollgate /var/lib/tollgate
USER node
EXPOSE 4000 9001
# Probes what the container runs, read from tollgate's command line (/proc/1/cmdline): `serve` and `gateway`
# GET /health/liveliness on the HTTP port, `serve` and `authz` grpc.health.v1.Health/Check on the gRPC port,
# ports and host as given to them. So `docker run tollgate:0.1.0 authz` is healthy too, not failed for want of
# the gateway's port 4000. Node only: the slim image has no curl. (Kubernetes ignores this and uses the
# chart's probes.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "dist/src/main/healthcheck.js"]
# Exec form, so node is PID 1 and receives SIGTERM itself: tollgate installs SIGTERM/SIGINT handlers
# (src/main/cli.ts) that stop accepting, drain requests and streams, flush spend and exit 0. It starts no
# child processes, so there is nothing for an init (tini) to reap.
ENTRYPOINT ["node", "bin/tollgate.js"]
CMD ["serve"]
