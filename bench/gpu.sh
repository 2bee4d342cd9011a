#!/usr/bin/env bash
# GPU figures (issue 18, item 5), each against PyTorch / onnxruntime on the same machine:
#  - training: burn's wgpu backend (Vulkan) against PyTorch on CUDA, small CNN and ResNet-18;
#  - inference: `strix predict --backend ort --device cuda` (ONNX Runtime's CUDA execution
#    provider) against the CPU backends and the Python pipeline.
# Needs: STRIX_BIN, a strix built with `--features wgpu`; ORT_DYLIB_PATH, a CPU libonnxruntime;
# ORT_CUDA_LIB (optional), the libonnxruntime.so of PyPI's onnxruntime-gpu with the CUDA and
# cuDNN libraries it needs on LD_LIBRARY_PATH; python3 with torch (CUDA), numpy, Pillow and
# onnxruntime. STRIX_FIXTURES as for every benchmark.
#     bench/gpu.sh [IMAGES_PER_EPOCH]     (ROUNDS=N: ResNet-18 rounds, default 2)
set -uo pipefail  # one failing part does not stop the others
cd "$(dirname "${BASH_SOURCE[0]}")"
: "${STRIX_BIN:?STRIX_BIN must name a strix built with --features wgpu}"
images="${1:-10000}"
threads="$(nproc)"
if [ -n "${ORT_CUDA_LIB:-}" ]; then
  echo "== classify, ONNX Runtime CUDA against the CPU"
  python3 classify.py --repeat 100 --rounds 3 --cuda-lib "$ORT_CUDA_LIB"
fi
echo "== small CNN, wgpu against PyTorch CUDA"
python3 train_small_cnn.py --images "$images" --threads "$threads" --device wgpu
echo "== ResNet-18 step, wgpu against PyTorch CUDA"
python3 train_resnet18.py --steps 12 --rounds "${ROUNDS:-2}" --threads "$threads" --device wgpu
