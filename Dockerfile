# syntax=docker/dockerfile:1
#
# redguard container image.
#
#   docker build -t redguard:dev .
#   docker run --rm -v redguard-sock:/var/run/redguard -e REDGUARD_REDIS_URL=redis://host:6379 redguard:dev
#
# The runtime image has no shell and no package manager: only the binary, glibc and CA
# certificates (distroless/cc). It runs as uid/gid 65532 ("nonroot").

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

############################################################################################
FROM ${RUST_IMAGE} AS builder
WORKDIR /build

# 1. Dependencies only. This layer is rebuilt when Cargo.toml or Cargo.lock change, not when
#    the code does: a stub crate with the same manifest compiles every dependency once.
#    (If Cargo.toml ever declares [[bench]]/[[test]]/[[example]] targets, stub their files
#    here as well, or the manifest will not load; deploy/tests checks this.)
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > benches/hot_paths.rs \
 && cargo build --release --locked \
 && rm -rf src benches

# 2. The crate itself. `touch` makes sure cargo sees the real sources as newer than the stub
#    build it just cached (COPY keeps the mtimes of the build context).
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/redguard /out/redguard \
 && mkdir -p /out/run-redguard

############################################################################################
FROM ${RUNTIME_IMAGE}

LABEL org.opencontainers.image.title="redguard" \
      org.opencontainers.image.description="Circuit-breaking Redis sidecar (Unix-socket JSON API, fallback cache, Prometheus metrics)" \
      org.opencontainers.image.licenses="Apache-2.0"

# Default config (Kubernetes mounts its own; see deploy/kubernetes). Read-only for the
# runtime user.
COPY deploy/redguard.yaml /etc/redguard/redguard.yaml
# The socket directory must be writable by the runtime user when no volume is mounted over it
# (plain `docker run`); in Kubernetes an emptyDir is mounted here.
COPY --from=builder --chown=65532:65532 /out/run-redguard /var/run/redguard
COPY --from=builder /out/redguard /usr/local/bin/redguard

# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532

# Admin listener: /metrics, /livez, /readyz, /api/v1/health/*. The API itself is the Unix
# socket, not a port.
EXPOSE 9190

# No HEALTHCHECK: the image has no shell or HTTP client. Orchestrators probe
# http://<pod>:9190/livez and /readyz directly.
# SIGTERM (the default stop signal) drains gracefully within listen.drain_timeout (+5s for
# pending notifications): give the container a stop timeout of at least 15s.
ENTRYPOINT ["/usr/local/bin/redguard"]
CMD ["run", "--config", "/etc/redguard/redguard.yaml"]
