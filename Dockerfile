# The sublet controller image: ghcr.io/sublet-dev/sublet (see charts/sublet/values.yaml).
#   docker build -t ghcr.io/sublet-dev/sublet:0.1.0 .
# Build stage: the release binary, with dependencies compiled in their own layer so that source changes
# rebuild only sublet itself.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/plan.rs \
 && cargo build --release --locked --bin sublet \
 && rm -rf src benches
COPY src ./src
COPY benches ./benches
# cargo judges freshness by mtime; make sure the real sources are newer than the placeholders.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin sublet \
 && install -D -m 0755 target/release/sublet /out/sublet

# Runtime: distroless with glibc and CA certificates, no shell, non-root (uid 65532, as the chart's
# securityContext expects).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sublet /usr/local/bin/sublet
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/sublet"]
CMD ["run"]
