# One image with every Berth binary, built in two stages. The compose file picks the binary
# per service. Base images are build arguments so a mirror or a pinned digest can be used.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/berth target/release/berth-control target/release/berth-agent \
       target/release/berth-runner target/release/berth-api /out/

FROM ${RUNTIME_IMAGE}
# git and the Docker client for runners' builds; curl for health checks.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl git docker.io \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The control plane needs no privileges; the agent and runner run as root to reach the
# Docker socket (compose sets `user` per service).
RUN useradd --system --uid 10001 --home /var/lib/berth berth && mkdir -p /var/lib/berth && chown berth /var/lib/berth
WORKDIR /var/lib/berth
CMD ["berth-control"]
