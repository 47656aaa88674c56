#!/usr/bin/env bash
# The prediction server benchmark (issue 4): flywheel-server against the in-process ONNX Runtime
# limit and against MLServer serving the same scikit-learn pipeline, one load generator, one run.
#
#   scripts/bench-server.sh [SECONDS [BENCH FLAGS...]]   # seconds per configuration (default 10)
#
# Flags after SECONDS go to the bench, e.g. `--batching off,on,delay=500 --concurrency 64`
# (see `cargo bench -p flywheel-server --bench serve -- --help`). BENCH_MLSERVER=0 leaves the
# MLServer rows out.
# Builds the bench in release, creates .venv-bench-mlserver (MLServer + its scikit-learn runtime,
# and skl2onnx to convert the same fitted pipeline), trains the penguins random forest once
# (scripts/bench_server_model.py, which also trains penguins_mlp, an MLP on the same columns whose
# inference outweighs HTTP, for the batching rows), then runs server/benches/serve.rs, which starts
# each server in turn, drives it over loopback HTTP and prints the markdown table with ratios.
#
# With two or more CPUs the servers run on CPU 0 and the load generator on CPU 1 (taskset), so the
# two never compete for a core; set BENCH_SERVER_CPUS / BENCH_CLIENT_CPUS to change that. As root
# the run gets nice -10 (BENCH_NICE) so that other work on a shared machine disturbs it less; the
# servers inherit it, MLServer included.
# Python is only the peer baseline here; nothing of it is part of the product.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${1:-10}"
shift $(( $# > 0 ? 1 : 0 ))
work="${BENCH_WORK:-$root/target/bench-server}"
venv="$root/.venv-bench-mlserver"
mlserver_port="${BENCH_MLSERVER_PORT:-18081}"

[ -f .tools/onnxruntime/libonnxruntime.so ] || scripts/fetch-onnxruntime.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$root/.tools/onnxruntime/libonnxruntime.so}"

# The MLServer side and the model converter; pinned so both servers get the same pipeline.
want="mlserver==1.7.1 mlserver-sklearn==1.7.1 scikit-learn==1.9.1 skl2onnx==1.20.0 onnx==1.23.2 onnxruntime==1.32.0"
if [ ! -x "$venv/bin/mlserver" ] || [ "$(cat "$venv/.bench-requirements" 2>/dev/null)" != "$want" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet $want
  echo "$want" > "$venv/.bench-requirements"
fi

rm -rf "$work/models"
"$venv/bin/python" scripts/bench_server_model.py "$work/models" "$mlserver_port"

cpus="$(nproc)"
server_cpus="${BENCH_SERVER_CPUS:-}"
client_cpus="${BENCH_CLIENT_CPUS:-}"
if [ "$cpus" -ge 2 ] && command -v taskset > /dev/null; then
  server_cpus="${server_cpus:-0}"
  client_cpus="${client_cpus:-1}"
fi

# Build first (not under taskset), so the run below measures and does not compile.
cargo bench -p flywheel-server --bench serve --no-run
bench=(cargo bench -q -p flywheel-server --bench serve --
  --model-dir "$work/models/penguins_rf"
  --heavy-model-dir "$work/models/penguins_mlp"
  --seconds "$seconds")
if [ "${BENCH_MLSERVER:-1}" != 0 ]; then
  bench+=(--mlserver-bin "$venv/bin/mlserver"
    --mlserver-dir "$work/models/mlserver"
    --mlserver-addr "127.0.0.1:$mlserver_port")
fi
if [ -n "$server_cpus" ]; then
  bench+=(--server-cpus "$server_cpus")
fi
prefix=()
nice_level="${BENCH_NICE:-}"
if [ -z "$nice_level" ] && [ "$(id -u)" = 0 ]; then
  nice_level=-10
fi
if [ -n "$nice_level" ]; then
  prefix+=(nice -n "$nice_level")
fi
if [ -n "$client_cpus" ]; then
  prefix+=(taskset -c "$client_cpus")
fi
echo "machine: $cpus CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "servers on CPUs ${server_cpus:-any}, load generator on CPUs ${client_cpus:-any}, nice ${nice_level:-0}" >&2
"${prefix[@]}" "${bench[@]}" "$@"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
