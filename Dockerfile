# syntax=docker/dockerfile:1
# The gatehouse controller image: a static-ish Rust binary on distroless/cc (glibc, CA
# certificates, no shell), running as the non-root user 65532.
#
#   docker build -t <registry>/gatehouse:0.1.0 .
#
# NOTE: the development machine has no Docker engine, so this file is not built by the test
# suite; it is kept deliberately simple. Everything it compiles is what `cargo build --release
# --locked` builds in CI, and the chart (charts/gatehouse) runs it with a read-only root
# filesystem, seccomp RuntimeDefault and every capability dropped.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# libgit2 (git2) and ring are compiled from source with the C toolchain of the image.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benchmarks as targets, so their sources must exist to read the
# manifest (they are not built).
COPY benches ./benches
RUN cargo build --release --locked --bin gatehouse \
 && install -D -m 0755 target/release/gatehouse /out/gatehouse

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/gatehouse /usr/local/bin/gatehouse
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["run"]
