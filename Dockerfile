# One image with every binary of the pipeline: product, order, outbox, perf,
# token (the issuer of one machine, for compose's own keys and tokens).
# docker-compose.yml runs each service from it with its own command.
#
# Build stage: BuildKit cache mounts keep the cargo registry and the target
# directory between builds, so a code change recompiles our crates only.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/product target/release/order target/release/outbox target/release/perf target/release/token /out/

# Runtime stage: a slim Debian with curl for health checks, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home pipeline \
 && mkdir /auth && chown pipeline /auth
COPY --from=build /out/ /usr/local/bin/
USER pipeline
ENV LOG_FORMAT=json
