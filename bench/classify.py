#!/usr/bin/env python3
"""End-to-end classification throughput: Strix vs the Python pipeline people write.

Both sides do the whole job per image: read and decode the file, resize the shorter side to 256,
centre-crop 224, normalise, run EfficientNet-Lite0, softmax, top-5. The model is loaded once
before timing on both sides.

- Python: Pillow (decode + bilinear resize) + numpy + onnxruntime, one image after another,
  onnxruntime with its default threads (all cores).
- Strix: `strix predict` (release build) with --backend tract and --backend ort, all cores; its
  own summary line gives images/s measured after the model is loaded.

Usage: bench/classify.py [--repeat N] [--images DIR]   (after ./scripts/setup)
Prints images/s for each and the ratio Strix / Python per backend.
"""
import argparse
import glob
import os
import time

from strix_run import FIXTURES, compare, efficientnet_input, environment, softmax


def python_pipeline(files, model_path):
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])

    def classify(path):
        p = softmax(session.run(None, {"input": efficientnet_input(path)})[0][0])
        return np.argsort(-p)[:5]

    classify(files[0])  # warm-up, as Strix's model load includes its first allocation
    start = time.perf_counter()
    for f in files:
        classify(f)
    return len(files) / (time.perf_counter() - start)


def main():
    fixtures = FIXTURES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20, help="passes over the image set (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, interleaved; the median is reported (default 3)")
    ap.add_argument("--images", default=os.path.join(fixtures, "images"))
    args = ap.parse_args()
    photos = sorted(glob.glob(os.path.join(args.images, "*.jpg")) + glob.glob(os.path.join(args.images, "*.png")))
    files = photos * args.repeat
    model = os.path.join(fixtures, "models", "classify", "efficientnet_lite0.onnx")
    env = environment()

    print(f"{len(photos)} photos x {args.repeat} = {len(files)} images, {os.cpu_count()} cores, median of {args.rounds} rounds")
    compare("Pillow + numpy + onnxruntime", lambda f: python_pipeline(f, model), [], files, args.rounds, env)


if __name__ == "__main__":
    main()
