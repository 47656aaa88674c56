#!/usr/bin/env bash
# The main job (README): fetches ONNX Runtime, builds Flywheel, runs the quickstart study end to
# end (trials as local processes) and serves the winner on http://127.0.0.1:8080 until Ctrl-C.
# Extra arguments go to `flywheel run` (e.g. --no-serve, --serve 127.0.0.1:9000, --dir DIR).
# Running it again resumes the same study directory (.flywheel/<study>); delete it to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
study="${STUDY:-examples/quickstart/study.yaml}"
scripts/fetch-onnxruntime.sh
cargo build --release --locked -p flywheel-operator -p flywheel-trainer -p flywheel-server
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$PWD/.tools/onnxruntime/libonnxruntime.so}"
exec ./target/release/flywheel run "$study" "$@"
