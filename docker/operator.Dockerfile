# syntax=docker/dockerfile:1
# The Flywheel operator image: the `flywheel` binary (controllers and CLI) on distroless. It carries
# no ONNX Runtime: the operator only starts trainer and server pods, it never runs a model.
#
# Build from the repository root (the whole workspace is the context, .dockerignore trims it):
#   docker build -f docker/operator.Dockerfile -t ghcr.io/flywheel-ml/flywheel-operator:0.1.0 .

FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
# The target folder is a cache mount (shared by the three images), so the binary is copied out
# of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=flywheel-target,sharing=locked \
    cargo build --release --locked -p flywheel-operator --bin flywheel \
 && install -D -m 0755 target/release/flywheel /out/flywheel

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="flywheel-operator" \
      org.opencontainers.image.source="https://github.com/flywheel-ml/flywheel" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/flywheel /usr/local/bin/flywheel
# distroless "nonroot": the uid/gid the chart's and the builders' security contexts expect.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/flywheel"]
CMD ["operator"]
