# syntax=docker/dockerfile:1
# The gatehouse controller image: the release binary on Debian bookworm-slim with only the
# shared libraries it links (libssl3 and zlib for libgit2's HTTPS and SSH transports) and the
# CA certificates, running as the non-root user 65532.
#
#   docker build -t <registry>/gatehouse:0.1.0 .
#
# NOTE: the development machine has no Docker engine, so this file is not built by the test
# suite; it is kept deliberately simple. It compiles exactly what `cargo build --release
# --locked` builds, and the chart (charts/gatehouse) runs it with a read-only root filesystem,
# seccomp RuntimeDefault and every capability dropped. `ldd target/release/gatehouse` lists
# the libraries the runtime stage must provide.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The image brings the C toolchain, pkg-config and the OpenSSL and zlib headers that ring,
# libgit2 and libssh2 are compiled against.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benchmarks as targets, so their sources must exist to read the
# manifest (they are not built).
COPY benches ./benches
RUN cargo build --release --locked --bin gatehouse \
 && install -D -m 0755 target/release/gatehouse /out/gatehouse

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["run"]
