# The sublet controller image: ghcr.io/sublet-dev/sublet (see charts/sublet/values.yaml).
#   docker build -t ghcr.io/sublet-dev/sublet:0.1.0 .
# Build stage: the release binary, with dependencies compiled in their own layer so that source changes
# rebuild only sublet itself.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# The workspace names the sandbox crate, so its manifest must be there; the image's build leaves it out
# (--no-default-features: no `demo` feature, no API server in the image), so placeholders stand for its sources.
COPY crates/sandbox/Cargo.toml crates/sandbox/
RUN mkdir -p src benches crates/sandbox/src crates/sandbox/benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs crates/sandbox/src/lib.rs \
 && for b in plan controller simulate observe; do echo 'fn main() {}' > benches/$b.rs; done \
 && echo 'fn main() {}' > crates/sandbox/benches/sandbox.rs \
 && cargo build --release --locked -p sublet --no-default-features --bin sublet \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
# cargo judges freshness by mtime; make sure the real sources are newer than the placeholders.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p sublet --no-default-features --bin sublet \
 && install -D -m 0755 target/release/sublet /out/sublet

# Runtime: distroless with glibc and CA certificates, no shell, non-root (uid 65532, as the chart's
# securityContext expects).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sublet /usr/local/bin/sublet
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sublet"]
CMD ["run"]
