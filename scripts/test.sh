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
# The cluster tier: the operator against a real control plane (etcd, kube-apiserver,
# kube-controller-manager, fakelet) from ../shared/k8s; it says SKIPPED when that kit is absent.
scripts/test-cluster.sh
