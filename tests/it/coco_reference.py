#!/usr/bin/env python3
"""Ground truth, noisy predictions and pycocotools' numbers for them.

usage: coco_reference.py OUT_DIR SEED bbox|keypoints
writes OUT_DIR/gt.json, OUT_DIR/dt.json and OUT_DIR/reference.json
({"stats": [...], "per_class": [{"category_id", "ap", "ap50"}]}).

The data is made to exercise what COCOeval does: objects of every size range, crowd regions,
ground-truth areas smaller than their boxes (as segmentation areas are), tied scores, missed
objects, duplicates, wrong classes, false positives, images without objects, and for keypoints
unlabelled (invisible) points and people with no keypoints at all.
"""
import contextlib
import io
import json
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def boxes(rng, n, w, h):
    out = []
    for _ in range(n):
        size = rng.choice([rng.uniform(8, 30), rng.uniform(35, 90), rng.uniform(100, 250)])
        bw, bh = size * rng.uniform(0.5, 1.5), size * rng.uniform(0.5, 1.5)
        out.append([rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh])
    return out


def jitter(rng, b, amount):
    x, y, w, h = b
    return [x + rng.normal(0, amount * w), y + rng.normal(0, amount * h), max(1.0, w * rng.uniform(1 - amount, 1 + amount)),
            max(1.0, h * rng.uniform(1 - amount, 1 + amount))]


def make_bbox(rng):
    cats = [{"id": i, "name": n} for i, n in [(1, "person"), (3, "car"), (18, "dog"), (44, "bottle")]]
    images, anns, dets = [], [], []
    for img_id in range(1, 41):
        w, h = 640, 480
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id}.jpg"})
        n = 0 if img_id % 9 == 0 else rng.integers(1, 9)
        for b in boxes(rng, n, w, h):
            cat = cats[rng.integers(len(cats))]["id"]
            crowd = int(rng.random() < 0.06)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": b,
                         "area": b[2] * b[3] * rng.uniform(0.6, 1.0), "iscrowd": crowd})
            if rng.random() < 0.85:
                dets.append({"image_id": img_id, "category_id": cat, "bbox": jitter(rng, b, 0.12), "score": round(rng.random(), 2)})
            if rng.random() < 0.15:
                dets.append({"image_id": img_id, "category_id": cat, "bbox": jitter(rng, b, 0.25), "score": round(rng.random() * 0.6, 2)})
            if rng.random() < 0.1:
                other = cats[rng.integers(len(cats))]["id"]
                dets.append({"image_id": img_id, "category_id": other, "bbox": jitter(rng, b, 0.1), "score": round(rng.random(), 2)})
        for b in boxes(rng, rng.integers(0, 4), w, h):
            dets.append({"image_id": img_id, "category_id": cats[rng.integers(len(cats))]["id"], "bbox": b, "score": round(rng.random() * 0.7, 2)})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def make_keypoints(rng):
    cats = [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)]}]
    images, anns, dets = [], [], []
    for img_id in range(1, 31):
        images.append({"id": img_id, "width": 640, "height": 480, "file_name": f"{img_id}.jpg"})
        for b in boxes(rng, 0 if img_id % 7 == 0 else rng.integers(1, 5), 640, 480):
            kps, vis = [], 0
            for _ in range(17):
                v = int(rng.choice([0, 1, 2], p=[0.2, 0.2, 0.6]))
                x, y = (b[0] + rng.random() * b[2], b[1] + rng.random() * b[3]) if v else (0.0, 0.0)
                kps += [x, y, v]
                vis += v > 0
            if rng.random() < 0.1:
                kps, vis = [0.0] * 51, 0
            crowd = int(rng.random() < 0.05)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": 1, "bbox": b, "area": b[2] * b[3] * rng.uniform(0.5, 1.0),
                         "iscrowd": crowd, "keypoints": kps, "num_keypoints": int(vis)})
            if rng.random() < 0.85:
                scale = 0.05 * (b[2] + b[3]) / 2
                guess = []
                for k in range(17):
                    x, y = (kps[3 * k], kps[3 * k + 1]) if kps[3 * k + 2] else (b[0] + rng.random() * b[2], b[1] + rng.random() * b[3])
                    guess += [x + rng.normal(0, scale), y + rng.normal(0, scale), 1.0]
                dets.append({"image_id": img_id, "category_id": 1, "keypoints": guess, "score": round(rng.random(), 2)})
        for b in boxes(rng, rng.integers(0, 3), 640, 480):
            guess = []
            for _ in range(17):
                guess += [b[0] + rng.random() * b[2], b[1] + rng.random() * b[3], 1.0]
            dets.append({"image_id": img_id, "category_id": 1, "keypoints": guess, "score": round(rng.random() * 0.5, 2)})
    return {"images": images, "annotations": anns, "categories": cats}, dets


def main():
    out, seed, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rng = np.random.default_rng(seed)
    gt, dt = make_bbox(rng) if kind == "bbox" else make_keypoints(rng)
    json.dump(gt, open(f"{out}/gt.json", "w"))
    json.dump(dt, open(f"{out}/dt.json", "w"))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(f"{out}/gt.json")
        res = coco.loadRes(f"{out}/dt.json")
        ev = COCOeval(coco, res, kind)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = []
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class.append({"category_id": int(cat), "ap": float(np.mean(p[p > -1])) if (p > -1).any() else -1.0,
                          "ap50": float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else -1.0})
    json.dump({"stats": [float(v) for v in ev.stats], "per_class": per_class}, open(f"{out}/reference.json", "w"))


if __name__ == "__main__":
    main()
