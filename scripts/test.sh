#!/usr/bin/env bash
# The test command (README): installs what the tests need on a fresh machine — ONNX Runtime from
# PyPI, the Python test tooling (onnx checker, scikit-learn) — then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-onnxruntime.sh
scripts/setup-python.sh
cargo test --workspace --locked "$@"
# The Helm chart: CRDs in sync, helm lint --strict, rendered objects schema-valid.
scripts/check-chart.sh
