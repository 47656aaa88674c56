#!/usr/bin/env bash
# Model quality at equal wall-clock budget: Flywheel (`flywheel run`, the promoted model scored
# through its prediction endpoint) vs FLAML, on the same train/test split of shared datasets.
# Usage: [SEEDS=0,1,2,3,4] scripts/bench-automl.sh [budget-seconds] [dataset ...]
#   (default: 60 adult breast_cancer diabetes, seed 0). Each seed re-splits the data and reseeds
#   both sides; the summary shows the promoted model's selection vs held-out score per dataset.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
budget="${1:-60}"
shift || true
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(adult breast_cancer diabetes)
scripts/fetch-onnxruntime.sh
cargo build --release --locked -p flywheel-operator -p flywheel-trainer -p flywheel-server
venv="$root/.venv-bench-automl"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import flaml.automl' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet "flaml[automl]==2.7.0"
fi
export ORT_DYLIB_PATH="$root/.tools/onnxruntime/libonnxruntime.so"
"$venv/bin/python" "$root/scripts/bench_automl.py" --budget "$budget" --seeds "${SEEDS:-0}" \
  --datasets-dir "${DATASETS_DIR:-$root/../shared/datasets}" --flywheel "$root/target/release/flywheel" \
  --work "$root/target/automl-bench" "${datasets[@]}"
