# syntax=docker/dockerfile:1
# The prediction service: `flywheel-server` plus the ONNX Runtime library it serves models with.
# The operator's Deployment sets only `args` (--model-dir, --model-name, --listen).
#
# Build from the repository root:
#   docker build -f docker/server.Dockerfile -t ghcr.io/flywheel-ml/flywheel-server:0.1.0 .

FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=flywheel-target,sharing=locked \
    cargo build --release --locked -p flywheel-server --bin flywheel-server \
 && install -D -m 0755 target/release/flywheel-server /out/flywheel-server

# ONNX Runtime comes from its PyPI wheel, as in scripts/fetch-onnxruntime.sh; pip picks the wheel
# for the architecture being built. Only the shared library is kept (ort loads it at run time).
FROM python:3.11-slim AS onnxruntime
ARG ORT_VERSION=1.32.0
RUN pip download --no-cache-dir --quiet --no-deps --only-binary=:all: -d /wheel "onnxruntime==${ORT_VERSION}" \
 && python -c 'import glob, os, shutil, sys, zipfile; \
z = zipfile.ZipFile(glob.glob("/wheel/onnxruntime-*.whl")[0]); \
names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so.")]; \
names or sys.exit("onnxruntime wheel holds no onnxruntime/capi/libonnxruntime.so.*"); \
os.makedirs("/ort"); \
shutil.copyfileobj(z.open(names[0]), open("/ort/libonnxruntime.so", "wb"))' \
 && echo "${ORT_VERSION}" > /ort/VERSION

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="flywheel-server" \
      org.opencontainers.image.source="https://github.com/flywheel-ml/flywheel" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=onnxruntime /ort/ /opt/onnxruntime/
COPY --from=build /out/flywheel-server /usr/local/bin/flywheel-server
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so
USER 65532:65532
# KServe V1 / Open Inference V2, /metrics
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/flywheel-server"]
