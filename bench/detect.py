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

from strix_run import FIXTURES, compare, environment

MEAN = (103.53, 116.28, 123.675)
STD = (57.375, 57.12, 58.395)


def python_pipeline(files, model_path):
    import cv2
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    heads = [(8, "Identity:0", "Identity_3:0"), (16, "Identity_1:0", "Identity_4:0"), (32, "Identity_2:0", "Identity_5:0")]
    grids = {}
    for s, _, _ in heads:
        n = 416 // s
        idx = np.arange(n * n)
        grids[s] = ((idx % n + 0.5) * s, (idx // n + 0.5) * s)
    bins = np.arange(11, dtype=np.float32)

    def detect(path):
        img = cv2.imread(path)
        h, w = img.shape[:2]
        x = cv2.resize(img, (416, 416), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = ((x - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None]
        outs = dict(zip(names, session.run(None, {"input_1:0": x})))
        boxes, scores, classes = [], [], []
        for s, cn, rn in heads:
            cls = outs[cn][0]
            cell, c = np.nonzero(cls > 0.3)
            if len(cell) == 0:
                continue
            reg = outs[rn][0][cell].reshape(-1, 4, 11)
            e = np.exp(reg - reg.max(-1, keepdims=True))
            d = (e / e.sum(-1, keepdims=True) * bins).sum(-1) * s
            cx, cy = grids[s][0][cell], grids[s][1][cell]
            boxes.append(np.stack([cx - d[:, 0], cy - d[:, 1], d[:, 0] + d[:, 2], d[:, 1] + d[:, 3]], 1))
            scores.append(cls[cell, c])
            classes.append(c)
        if not boxes:
            return []
        boxes, scores, classes = np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes)
        keep = cv2.dnn.NMSBoxesBatched(boxes.tolist(), scores.tolist(), classes.tolist(), 0.3, 0.5)
        out = []
        for i in np.array(keep).reshape(-1):
            x1, y1, bw, bh = boxes[i]
            out.append((classes[i], scores[i], x1 * w / 416, y1 * h / 416, (x1 + bw) * w / 416, (y1 + bh) * h / 416))
        return out

    detect(files[0])  # warm-up, as Strix's model load includes its first allocation
    start = time.perf_counter()
    for f in files:
        detect(f)
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
