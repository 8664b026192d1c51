# syntax=docker/dockerfile:1
#
# mse-proxy container image. Build: docker build -t mse-proxy .
# Run: see README.md, "Operating". Needs BuildKit (the default builder since
# Docker 23) for the cache and bind mounts below.

# --- build -----------------------------------------------------------------
FROM rust:1-bookworm AS build
# What the build needs beyond Rust (scripts/build-deps; no protoc). The
# image has most of it already: installing the list keeps the stage true
# to it, and PROTOC=/bin/false proves no build script reaches for protoc.
COPY scripts/build-deps /tmp/build-deps
RUN apt-get update \
    && sed 's/#.*//' /tmp/build-deps | xargs apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/*
ENV PROTOC=/bin/false
WORKDIR /src
COPY . .
# The cargo registry and target directory live in build caches, so a rebuild
# after a source change recompiles only this crate, not every dependency.
# The binary is copied out of the cached target directory, which does not
# end up in any image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin mse-proxy \
    && install -D -m 0755 target/release/mse-proxy /out/mse-proxy

# --- runtime ---------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: system roots for terminate routes' upstream TLS.
# curl: the HEALTHCHECK. libcap2-bin: setcap, removed again below.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 mse-proxy \
    && useradd --system --uid 10001 --gid mse-proxy --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin mse-proxy \
    && mkdir -p /etc/mse-proxy /var/lib/mse-proxy \
    && chown 10001:10001 /var/lib/mse-proxy

# The binary is installed, given cap_net_bind_service (so the non-root user
# can bind 443) and verified in one layer: COPY does not reliably keep file
# capabilities, and setcap on a file from an earlier layer would copy the
# whole binary into a second layer.
RUN --mount=type=bind,from=build,source=/out/mse-proxy,target=/tmp/mse-proxy \
    install -m 0755 /tmp/mse-proxy /usr/local/bin/mse-proxy \
    && setcap cap_net_bind_service=+ep /usr/local/bin/mse-proxy \
    && setcap -v cap_net_bind_service=+ep /usr/local/bin/mse-proxy \
    && apt-get purge -y --auto-remove libcap2-bin \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb \
    && /usr/local/bin/mse-proxy --version

# proxy.toml, routes.toml (and certificates, if any) are mounted here; the
# routes file is watched, so edits on the host apply without a restart.
VOLUME ["/etc/mse-proxy"]
# The durable state (config/docker.toml's state_dir), writable by the
# binary's user: a named volume mounted here starts owned by uid 10001.
VOLUME ["/var/lib/mse-proxy"]

USER 10001:10001

# 443: TLS from the public. 9090: admin API over TLS, /metrics, /healthz,
# /readyz (every read and write needs a token; publish it to the operators'
# network only all the same).
EXPOSE 443 9090

# Liveness of the process; /readyz additionally waits for the first route set.
# The admin listener speaks TLS (config/docker.toml); --insecure because the
# probe sends no secret and trusts the answer for nothing but "alive", and
# the certificate names the operators' address, not 127.0.0.1.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--insecure", "--max-time", "3", "--output", "/dev/null", "https://127.0.0.1:9090/healthz"]

# SIGTERM drains live connections for timeouts.shutdown_grace (30s by
# default): run with --stop-timeout above it.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mse-proxy"]
CMD ["--config", "/etc/mse-proxy/proxy.toml"]
