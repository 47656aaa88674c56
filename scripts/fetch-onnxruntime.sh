#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library from the PyPI `onnxruntime` wheel (the only registry
# this project may download from) into .tools/onnxruntime/. `ort` loads it at run time through
# ORT_DYLIB_PATH, which .cargo/config.toml points at this folder.
set -euo pipefail
version="${ORT_VERSION:-1.32.0}"
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/.tools/onnxruntime"
if [ -f "$dest/libonnxruntime.so" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
arch="$(uname -m)"
case "$arch" in
  x86_64) platform=manylinux_2_28_x86_64 ;;
  aarch64) platform=manylinux_2_28_aarch64 ;;
  *) echo "fetch-onnxruntime: no onnxruntime wheel for $arch" >&2; exit 1 ;;
esac
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --implementation cp --platform "$platform" \
  -d "$tmp" "onnxruntime==$version"
wheel="$(ls "$tmp"/onnxruntime-*.whl)"
python3 - "$wheel" "$tmp/lib" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so")]
    if not names:
        sys.exit("fetch-onnxruntime: wheel holds no onnxruntime/capi/libonnxruntime.so*")
    for n in names:
        with z.open(n) as src, open(os.path.join(out, os.path.basename(n)), "wb") as dst:
            dst.write(src.read())
PY
mkdir -p "$dest"
lib="$(ls "$tmp"/lib/libonnxruntime.so.* | head -n 1)"
cp "$lib" "$dest/"
ln -sf "$(basename "$lib")" "$dest/libonnxruntime.so"
echo "$version" > "$dest/VERSION"
echo "onnxruntime $version -> $dest/libonnxruntime.so"
