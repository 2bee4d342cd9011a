#!/usr/bin/env python3
"""End-to-end detection throughput: Strix vs OpenCV + onnxruntime in Python, NanoDet-m 416.

Both sides do the whole job per image: read and decode the file (OpenCV and libjpeg-turbo /
libpng on both sides), resize to 416x416 (bilinear), normalise in BGR, run NanoDet, decode
the GFL heads (softmax over distance bins), threshold at 0.3, per-class NMS at IoU 0.5, boxes
back to image pixels. The model is loaded before timing on both sides.

Images: the fixture photos and frames of the pedestrian video (decoded once, up front, to PNG
files both sides read).

Usage: bench/detect.py [--repeat N] [--frames N] [--rounds N]   (after ./scripts/setup)
Prints images/s for each and the ratio Strix / Python per backend.
"""
import argparse
import glob
import os
import tempfile
import time

from strix_run import FIXTURES, compare, environment, nanodet_detector


def python_pipeline(files, model_path):
    import cv2

    detect = nanodet_detector(model_path)
    detect(cv2.imread(files[0]))  # warm-up, as Strix's model load includes its first allocation
    start = time.perf_counter()
    for f in files:
        detect(cv2.imread(f))
    return len(files) / (time.perf_counter() - start)


def video_frames(count, out_dir):
    import cv2

    video = cv2.VideoCapture(os.path.join(FIXTURES, "video", "vtest_10s_h264.mp4"))
    paths = []
    while len(paths) < count:
        ok, frame = video.read()
        if not ok:
            break
        path = os.path.join(out_dir, f"vtest_{len(paths):03d}.png")
        cv2.imwrite(path, frame)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="passes over the image set (default 5)")
    ap.add_argument("--frames", type=int, default=30, help="video frames added to the photos (default 30)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, interleaved; the median is reported (default 3)")
    args = ap.parse_args()
    env = environment()
    model = os.path.join(FIXTURES, "models", "detect", "nanodet_m_416.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        photos = sorted(glob.glob(os.path.join(FIXTURES, "images", "*.jpg")) + glob.glob(os.path.join(FIXTURES, "images", "*.png")))
        frames = video_frames(args.frames, tmp)
        files = (photos + frames) * args.repeat
        print(f"{len(photos)} photos + {len(frames)} video frames, x {args.repeat} = {len(files)} images, "
              f"{os.cpu_count()} cores, median of {args.rounds} rounds")
        compare("OpenCV + onnxruntime", lambda f: python_pipeline(f, model), ["--task", "detect"], files, args.rounds, env)


if __name__ == "__main__":
    main()
