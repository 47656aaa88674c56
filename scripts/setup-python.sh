#!/usr/bin/env bash
# Creates .venv with the Python test tooling (scripts/requirements-test.txt). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements-test.sha256"
want="$(sha256sum "$root/scripts/requirements-test.txt" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$root/scripts/requirements-test.txt"
echo "$want" > "$stamp"
echo "python test tools installed in $venv"
