# Sourced by the scripts: where the tools and fixtures are. Safe to source from a shell too.
STRIX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export STRIX_ROOT
export STRIX_VENV="${STRIX_VENV:-$STRIX_ROOT/.venv}"
# Test fixtures live beside the project (../shared/fixtures) unless told otherwise.
export STRIX_FIXTURES="${STRIX_FIXTURES:-$(cd "$STRIX_ROOT/.." && pwd)/shared/fixtures}"
# ONNX Runtime for `--backend ort`: the library inside PyPI's onnxruntime wheel.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for lib in "$STRIX_VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*; do
    if [ -f "$lib" ]; then export ORT_DYLIB_PATH="$lib"; fi
  done
fi
# A real S3 server for the registry tests (s3s-fs, from crates.io; scripts/setup installs it).
export STRIX_TOOLS="${STRIX_TOOLS:-$HOME/.cache/strix-tools}"
export STRIX_S3_SERVER="${STRIX_S3_SERVER:-$STRIX_TOOLS/bin/s3s-fs}"
