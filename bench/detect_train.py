#!/usr/bin/env python3
"""Detector training: Strix (`strix train --task detect`, burn on the CPU) against Ultralytics
YOLOv8n (PyTorch on the CPU, from `yolov8n.yaml`: its pretrained weights cannot be downloaded
here) on the same dataset, for the same wall-clock budget, in one run.

The dataset: Fashion-MNIST items (T-shirt, trouser, sneaker) scaled, tinted and pasted onto the
fixture photos, with the tight box of the pasted pixels (the kind of set the tests build with
strix-data's synth), written once in COCO's layout for Strix and in Ultralytics' for YOLOv8n.

Strix trains first for --epochs; its wall time (start-up and per-epoch evaluation included)
becomes Ultralytics' `time` budget. Then each side's best model scores the validation images
with pycocotools (the reference COCO evaluation; Strix's own numbers equal it), and each
exported ONNX file is timed on ONNX Runtime with the same threads.

    python bench/detect_train.py [--train 300] [--val 60] [--size 320] [--epochs 10]

Needs `ultralytics` (and so `torch`) in the Python that runs it: not installed by
scripts/setup (the PyPI torch wheel pulls in gigabytes of CUDA libraries).
Prints mAP@[.5:.95], mAP@.5 and seconds per epoch for both, and inference images/s of both
exports, with ratios Strix / Ultralytics.
"""
import argparse
import glob
import gzip
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from strix_run import FIXTURES, ROOT, environment, strix_binary

CLASSES = ["t-shirt", "trouser", "sneaker"]
KEEP = [0, 1, 7]  # their Fashion-MNIST labels


def sprites():
    data = os.path.join(FIXTURES, "datasets", "fashion-mnist")
    with gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(data, "t10k-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return [(x[i], KEEP.index(int(y[i]))) for i in range(len(y)) if int(y[i]) in KEEP][:600]


def scene(background, items, size, rng):
    """A background filling the frame with 1-4 non-overlapping objects; (image, boxes)."""
    img = np.asarray(background.resize((size, size), Image.BILINEAR)).copy()
    boxes = []
    for _ in range(50):
        if len(boxes) >= rng.randint(1, 4):
            break
        mask, cls = items[rng.randrange(len(items))]
        side = rng.randint(size // 7, size // 2)
        x0, y0 = rng.randrange(size - side + 1), rng.randrange(size - side + 1)
        m = np.asarray(Image.fromarray(mask).resize((side, side), Image.NEAREST))
        ys, xs = np.nonzero(m > 40)
        if len(xs) == 0:
            continue
        box = [x0 + xs.min(), y0 + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        if any(box[0] < b[0] + b[2] and b[0] < box[0] + box[2] and box[1] < b[1] + b[3] and b[1] < box[1] + box[3]
               for b, _ in boxes):
            continue
        tint = np.array([rng.randint(64, 255) for _ in range(3)], np.float32)
        shade = (m[ys, xs].astype(np.float32) / 255.0)[:, None]
        img[y0 + ys, x0 + xs] = np.round(tint * shade).astype(np.uint8)
        boxes.append(([float(v) for v in box], cls))
    return Image.fromarray(img), boxes


def build(root, n_train, n_val, size, seed=16):
    items = sprites()
    backgrounds = [Image.open(p).convert("RGB") for p in sorted(glob.glob(os.path.join(FIXTURES, "images", "*.jpg")))]
    rng = random.Random(seed)
    coco, yolo = os.path.join(root, "coco"), os.path.join(root, "yolo")
    for part, n in (("train", n_train), ("val", n_val)):
        for d in (f"{coco}/images/{part}", f"{coco}/annotations", f"{yolo}/images/{part}", f"{yolo}/labels/{part}"):
            os.makedirs(d, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, boxes = scene(backgrounds[i % len(backgrounds)], items, size, rng)
            name = f"{part}{i:04d}.png"
            img.save(f"{coco}/images/{part}/{name}")
            shutil.copy(f"{coco}/images/{part}/{name}", f"{yolo}/images/{part}/{name}")
            images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
            rows = []
            for (x, y, w, h), c in boxes:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c + 1, "bbox": [x, y, w, h],
                             "area": w * h, "iscrowd": 0})
                rows.append(f"{c} {(x + w / 2) / size:.6f} {(y + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            with open(f"{yolo}/labels/{part}/{name[:-4]}.txt", "w") as f:
                f.write("\n".join(rows) + ("\n" if rows else ""))
        cats = [{"id": i + 1, "name": c} for i, c in enumerate(CLASSES)]
        with open(f"{coco}/annotations/instances_{part}.json", "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    with open(f"{yolo}/data.yaml", "w") as f:
        f.write(f"path: {yolo}\ntrain: images/train\nval: images/val\nnames:\n")
        f.writelines(f"  {i}: {c}\n" for i, c in enumerate(CLASSES))
    return coco, yolo


def pycocotools_map(gt_json, results):
    """(mAP@[.5:.95], mAP@.5) of COCO results by pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(gt_json)
    if not results:
        return 0.0, 0.0
    e = COCOeval(gt, gt.loadRes(results), "bbox")
    e.evaluate(), e.accumulate(), e.summarize()
    return float(e.stats[0]), float(e.stats[1])


def strix_side(coco, size, epochs, threads, env):
    run_dir = os.path.join(os.path.dirname(coco), "strix-run")
    # No --pretrained: the backbone starts from the zoo's efficientnet_lite0, as for any user.
    cmd = [strix_binary(), "-q", "train", "--task", "detect", "--data", coco,
           "--image-size", str(size), "--epochs", str(epochs), "--threads", str(threads), "--run-dir", run_dir]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    epochs_run = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    per_epoch = statistics.median(m["seconds"] for m in epochs_run)
    # The export's answers on the validation images, scored by pycocotools.
    out = os.path.join(run_dir, "val-results.json")
    subprocess.run([strix_binary(), "-q", "eval", "detect", "--json", "--score-threshold", "0.05",
                    "--gt", f"{coco}/annotations/instances_val.json", "--images", f"{coco}/images/val",
                    "--model", f"{run_dir}/export/model.toml", "--save-predictions", out, "--backend", "ort"],
                   cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    m = pycocotools_map(f"{coco}/annotations/instances_val.json", json.load(open(out)))
    return wall, len(epochs_run), per_epoch, m, os.path.join(run_dir, "export", "model.onnx")


def ultralytics_side(yolo, coco, size, budget_s, threads):
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    project = os.path.join(os.path.dirname(yolo), "ultra")
    model = YOLO("yolov8n.yaml")
    start = time.perf_counter()
    model.train(data=f"{yolo}/data.yaml", imgsz=size, epochs=1000, time=budget_s / 3600, device="cpu",
                workers=threads, batch=16, pretrained=False, project=project, name="run", exist_ok=True,
                plots=False, verbose=False, amp=False)
    wall = time.perf_counter() - start
    rows = open(os.path.join(project, "run", "results.csv")).read().splitlines()
    epochs = len(rows) - 1
    best = YOLO(os.path.join(project, "run", "weights", "best.pt"))
    results = []
    ids = {im["file_name"]: im["id"] for im in json.load(open(f"{coco}/annotations/instances_val.json"))["images"]}
    for r in best.predict(f"{coco}/images/val", imgsz=size, conf=0.05, device="cpu", verbose=False, stream=True):
        name = os.path.basename(r.path)
        for (x1, y1, x2, y2), s, c in zip(r.boxes.xyxy.tolist(), r.boxes.conf.tolist(), r.boxes.cls.tolist()):
            results.append({"image_id": ids[name], "category_id": int(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": s})
    m = pycocotools_map(f"{coco}/annotations/instances_val.json", results)
    onnx = best.export(format="onnx", imgsz=size, dynamic=False, simplify=False)
    return wall, epochs, wall / max(epochs, 1), m, onnx


def ort_images_per_second(onnx, size, threads, rounds=5, n=50):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    s = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    name = s.get_inputs()[0].name
    s.run(None, {name: x})
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            s.run(None, {name: x})
        rates.append(n / (time.perf_counter() - t))
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--val", type=int, default=60)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        sys.exit("needs `pip install ultralytics` in this Python (see the docstring)")
    env = environment()
    work = tempfile.mkdtemp(prefix="strix-detect-bench-")
    coco, yolo = build(work, a.train, a.val, a.size)
    print(f"dataset: {a.train} train / {a.val} val scenes at {a.size}x{a.size} in {work}")
    s_wall, s_epochs, s_epoch, (s_map, s_map50), s_onnx = strix_side(coco, a.size, a.epochs, a.threads, env)
    u_wall, u_epochs, u_epoch, (u_map, u_map50), u_onnx = ultralytics_side(yolo, coco, a.size, s_wall, a.threads)
    # Inference of the exports, interleaved rounds, medians.
    s_rates, u_rates = [], []
    for _ in range(3):
        s_rates += ort_images_per_second(s_onnx, a.size, a.threads, rounds=2)
        u_rates += ort_images_per_second(u_onnx, a.size, a.threads, rounds=2)
    s_ips, u_ips = statistics.median(s_rates), statistics.median(u_rates)
    print(f"{'':24}{'mAP@[.5:.95]':>13}{'mAP@.5':>9}{'epochs':>8}{'s/epoch':>9}{'wall s':>8}{'export img/s':>14}")
    print(f"{'strix (burn, cpu)':24}{s_map:13.4f}{s_map50:9.4f}{s_epochs:8d}{s_epoch:9.1f}{s_wall:8.0f}{s_ips:14.1f}")
    print(f"{'ultralytics yolov8n':24}{u_map:13.4f}{u_map50:9.4f}{u_epochs:8d}{u_epoch:9.1f}{u_wall:8.0f}{u_ips:14.1f}")
    print(f"ratios strix / ultralytics: mAP {s_map / max(u_map, 1e-9):.2f}x, s/epoch {s_epoch / u_epoch:.2f}x, "
          f"export inference {s_ips / u_ips:.2f}x (ONNX Runtime, batch 1, {a.threads} threads)")


if __name__ == "__main__":
    main()
