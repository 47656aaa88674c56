#!/usr/bin/env bash
# Ensemble vs best single trial: `flywheel run` on an 80/20 split of shared datasets, then both
# the best trial's and the ensemble's model.onnx scored in ONNX Runtime on the unseen 20 %.
# Usage: scripts/bench-ensemble.sh [trials] [dataset ...]   (default: 10 breast_cancer diabetes penguins)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
trials="${1:-10}"
shift || true
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(breast_cancer diabetes penguins)
scripts/fetch-onnxruntime.sh
scripts/setup-python.sh
cargo build --release --locked -p flywheel-operator -p flywheel-trainer -p flywheel-server
export ORT_DYLIB_PATH="$root/.tools/onnxruntime/libonnxruntime.so"
"$root/.venv/bin/python" "$root/scripts/bench_ensemble.py" --trials "$trials" \
  --datasets-dir "${DATASETS_DIR:-$root/../shared/datasets}" --flywheel "$root/target/release/flywheel" \
  --work "$root/target/ensemble-bench" "${datasets[@]}"
