#!/usr/bin/env python3
"""End-to-end detection throughput: Strix vs OpenCV + onnxruntime in Python, NanoDet-m 416.

Both sides do the whole job per image: read and decode the file (OpenCV and libjpeg-turbo /
libpng on both sides), resize to 416x416 (bilinear), normalise in BGR, run NanoDet, decode
the GFL heads (softmax over distance bins), threshold at 0.3, per-class NMS at IoU 0.5, boxes
back to image pixels. Both run as their own process over the same files, timed from outside
with start-up included; the boxes they find are compared.

Images: the fixture photos and frames of the pedestrian video (decoded once, up front, to PNG
files both sides read).

Usage: bench/detect.py [--repeat N] [--frames N] [--rounds N]   (after ./scripts/setup)
Prints images/s for each and the ratio Strix / Python per backend.
"""
import argparse
import glob
import json
import os
import sys
import tempfile

from strix_run import FIXTURES, box_iou, compare, environment, nanodet_detector


def peer(files, model_path):
    """The Python pipeline over `files`, one JSON answer per line: boxes as fractions."""
    import cv2

    detect = nanodet_detector(model_path)
    for f in files:
        img = cv2.imread(f)
        h, w = img.shape[:2]
        boxes = [[int(c), float(s), x1 / w, y1 / h, x2 / w, y2 / h] for c, s, x1, y1, x2, y2 in detect(img)]
        print(json.dumps({"Image": f, "boxes": boxes}))


def same_boxes(python, strix):
    """Confident Python boxes (score >= 0.5) that Strix also finds: same class, IoU >= 0.8."""
    labels = open(os.path.join(FIXTURES, "models", "detect", "coco80_labels.txt")).read().splitlines()
    agree = total = 0
    for p, s in zip(python, strix):
        ours = [(l["Name"], i["BoundingBox"]) for l in s.get("Labels", []) for i in l.get("Instances", [])]
        ours = [(n, [b["Left"], b["Top"], b["Left"] + b["Width"], b["Top"] + b["Height"]]) for n, b in ours]
        for c, score, *box in p["boxes"]:
            if score < 0.5:
                continue
            total += 1
            agree += any(n == labels[c] and box_iou(box, b) >= 0.8 for n, b in ours)
    return agree, total


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
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        return peer(sys.argv[2:], os.path.join(FIXTURES, "models", "detect", "nanodet_m_416.onnx"))
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
        compare("OpenCV + onnxruntime", __file__, ["--task", "detect"], files, args.rounds, env, same_boxes)


if __name__ == "__main__":
    main()
