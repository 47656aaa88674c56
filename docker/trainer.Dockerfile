# syntax=docker/dockerfile:1
# The built-in trial workload: `flywheel-trainer` plus the ONNX Runtime library it checks every
# export with. Trial Jobs set only `args` (the trial protocol), so the entrypoint is the trainer.
#
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t ghcr.io/flywheel-ml/flywheel-trainer:0.1.0 .

FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=flywheel-target,sharing=locked \
    cargo build --release --locked -p flywheel-trainer --bin flywheel-trainer \
 && install -D -m 0755 target/release/flywheel-trainer /out/flywheel-trainer

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
LABEL org.opencontainers.image.title="flywheel-trainer" \
      org.opencontainers.image.source="https://github.com/flywheel-ml/flywheel" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=onnxruntime /ort/ /opt/onnxruntime/
COPY --from=build /out/flywheel-trainer /usr/local/bin/flywheel-trainer
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/flywheel-trainer"]
