#!/usr/bin/env bash
# The main job (README): builds Flywheel and runs the quickstart study.
set -euo pipefail
cd "$(dirname "$0")/.."
study="${1:-examples/quickstart/study.yaml}"
cargo build --release --locked -p flywheel-operator --bin flywheel
./target/release/flywheel validate "$study"
