#!/usr/bin/env python3
"""End-to-end classification throughput: Strix vs the Python pipeline people write.

Both sides do the whole job per image: read and decode the file, resize the shorter side to 256,
centre-crop 224, normalise, run EfficientNet-Lite0, softmax, top-5. The model is loaded once
before timing on both sides.

- Python: Pillow (decode + bilinear resize) + numpy + onnxruntime, one image after another,
  onnxruntime with its default threads (all cores).
- Strix: `strix predict` (release build) with --backend tract and --backend ort, all cores.
Both sides run as their own process over the same files and are timed from outside, start-up
(model load) included; their top-1 answers are compared, so the rates compare the same work.

Usage: bench/classify.py [--repeat N] [--images DIR] [--cuda-lib FILE]   (after ./scripts/setup)
Prints images/s for each and the ratio Strix / Python per backend. `--cuda-lib` (the
libonnxruntime.so of PyPI's onnxruntime-gpu) adds Strix on the GPU: `--backend ort --device cuda`.
"""
import argparse
import glob
import json
import os
import sys

from strix_run import FIXTURES, compare, efficientnet_input, environment, softmax


def peer(files, model_path):
    """The Python pipeline over `files`, one JSON answer per line (top-5 class ids)."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    for f in files:
        p = softmax(session.run(None, {"input": efficientnet_input(f)})[0][0])
        print(json.dumps({"Image": f, "top5": [int(i) for i in np.argsort(-p)[:5]]}))


def same_top1(python, strix):
    """Images where each side's top-1 is among the other's top-3: Pillow's antialiased resize
    and Strix's (OpenCV's bilinear, as the reference pipeline) may swap a near-tie on a photo
    the model is unsure of (astronaut.png: 19% vs 9%), while wrong work disagrees everywhere."""
    agree = 0
    for p, s in zip(python, strix):
        ours = [l["ClassId"] for l in s["Labels"][:3]]
        agree += p["Image"] == s["Image"] and p["top5"][0] in ours and ours[0] in p["top5"][:3]
    return agree, max(len(python), len(strix))


def main():
    fixtures = FIXTURES
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        return peer(sys.argv[2:], os.path.join(fixtures, "models", "classify", "efficientnet_lite0.onnx"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20, help="passes over the image set (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, interleaved; the median is reported (default 3)")
    ap.add_argument("--images", default=os.path.join(fixtures, "images"))
    ap.add_argument("--cuda-lib", help="libonnxruntime.so with the CUDA execution provider: adds a GPU run")
    ap.add_argument("--gpu-workers", type=int, default=2, help="batches in flight on the GPU (default 2)")
    args = ap.parse_args()
    photos = sorted(glob.glob(os.path.join(args.images, "*.jpg")) + glob.glob(os.path.join(args.images, "*.png")))
    files = photos * args.repeat
    model = os.path.join(fixtures, "models", "classify", "efficientnet_lite0.onnx")
    env = environment()

    print(f"{len(photos)} photos x {args.repeat} = {len(files)} images, {os.cpu_count()} cores, median of {args.rounds} rounds")
    variants = {f"--backend {b}": ["--backend", b] for b in ("ort", "tract")}
    if args.cuda_lib:
        variants["--backend ort --device cuda"] = ["--backend", "ort", "--device", "cuda", "--ort-lib", args.cuda_lib,
                                                   "--batch", "32", "--workers", str(args.gpu_workers)]
    compare("Pillow + numpy + onnxruntime", __file__, [], files, args.rounds, env, same_top1, variants)


if __name__ == "__main__":
    main()
