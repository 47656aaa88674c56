#!/usr/bin/env bash
# Flywheel's trainer against scikit-learn, family by family, with the same hyper-parameters on the
# same split: the release trainer runs first (--threads 2) and leaves holdout.json; scikit-learn
# (n_jobs=2 / 2 OpenMP and BLAS threads) then trains on exactly the rows the trainer trained on and
# scores the rows it held out. Prints the markdown table for BENCHMARKS.md.
#
# Times are training only: the trainer's result.json train_seconds (which includes its ~10
# validation reports) against scikit-learn's estimator fit(); loading, featurisation, ONNX export
# and the parity gate are excluded on both sides. Ratio = flywheel / sklearn (below 1: faster).
#
# usage: scripts/bench-trainer.sh [DATASET_DIR] [FAMILY...]
#   DATASET_DIR defaults to ../shared/datasets from the repo root; FAMILY (logistic, svm,
#   decision_tree, random_forest, gradient_boosting, mlp) defaults to all of them.
#
# usage: scripts/bench-trainer.sh cache [DATASET_DIR]
#   Only the feature cache: cold (parse + schema inference) against cached (read, check and decode
#   the cache entry) preparation of adult.csv, release build, medians of 15 runs
#   (trainer/benches/feature_cache.rs).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "${1:-}" = cache ]; then
  datasets="$(cd "${2:-../shared/datasets}" && pwd)"
  exec cargo bench -q -p flywheel-trainer --bench feature_cache -- "$datasets/adult.csv" income
fi
datasets="${1:-../shared/datasets}"
shift || true
families=("$@")
[ ${#families[@]} -gt 0 ] || families=(logistic svm decision_tree random_forest gradient_boosting mlp)
threads=2
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.tools/onnxruntime/libonnxruntime.so}"
[ -f "$ORT_DYLIB_PATH" ] || scripts/fetch-onnxruntime.sh
scripts/setup-python.sh
cargo build --release -q -p flywheel-trainer
trainer="${CARGO_TARGET_DIR:-$root/target}/release/flywheel-trainer"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The same hyper-parameters reach both sides: scikit-learn reads them back from model.json.
declare -A params=(
  [logistic]='{"penalty":"l2","alpha":0.0001}'
  [svm]='{"c":1.0}'
  [decision_tree]='{"max_depth":10}'
  [random_forest]='{"n_estimators":100}'
  [gradient_boosting]='{"n_estimators":100}'
  [mlp]='{}'
)
echo "| dataset | family | flywheel acc | sklearn acc | flywheel train s | sklearn train s | time ratio |"
echo "|---|---|---|---|---|---|---|"
for spec in adult.csv:income letter.csv:lettr; do
  file="$datasets/${spec%%:*}"
  target="${spec#*:}"
  for family in "${families[@]}"; do
    out="$work/${spec%%.*}-$family"
    "$trainer" --dataset "$file" --target "$target" --family "$family" \
      --params "${params[$family]}" --threads "$threads" --seed 0 --output "$out" \
      >/dev/null 2>"$out.log" || { echo "trainer failed on $file $family:" >&2; cat "$out.log" >&2; exit 1; }
    .venv/bin/python scripts/bench-trainer-sklearn.py "$file" "$target" "$family" "$out" "$threads"
  done
done
