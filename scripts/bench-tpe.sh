#!/usr/bin/env bash
# Compares one TPE suggestion of Flywheel with Optuna's TPESampler on the same histories of 100
# and 1,000 completed trials, and prints the table for BENCHMARKS.md.
#
# 1. the Rust benchmark writes the histories to target/tpe-bench/ (and times Flywheel);
# 2. Optuna, installed in .venv-bench, times `study.ask()` on them;
# 3. the Rust benchmark runs again and prints both timings side by side.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/target/tpe-bench"
venv="$root/.venv-bench"

cargo bench -p flywheel-core --bench tpe >/dev/null

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import optuna' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet optuna
fi
"$venv/bin/python" "$root/scripts/bench-tpe-optuna.py" "$out/optuna-timings.json" \
  "$out/history-100.json" "$out/history-1000.json"

OPTUNA_TIMINGS="$out/optuna-timings.json" cargo bench -p flywheel-core --bench tpe
