"""Seed corpora for the fuzz targets, made from the fixtures and the project's own examples.

    seeds.py FIXTURES REPO OUT    writes OUT/<target>/seed-*; idempotent.

Each seed is a valid input (or one a byte away from it), so the fuzzer starts deep in the
parser instead of at its first check. Inputs stay small (a few KB): libFuzzer mutates faster.
"""
import base64
import gzip
import io
import json
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

FIX, REPO, OUT = (Path(a) for a in sys.argv[1:4])


def put(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data if isinstance(data, bytes) else data.encode())


def toml_blocks():
    for doc in [REPO / "README.md", REPO / "docs" / "model-spec.md"]:
        yield from re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S)


def small(photo, size, fmt, **kw):
    buf = io.BytesIO()
    img = Image.open(FIX / "images" / photo).convert("RGB")
    img.thumbnail(size)
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def text_seeds():
    for i, block in enumerate(toml_blocks()):
        put("model_spec", f"readme{i}", block)
        put("settings", f"readme{i}", block)
        for prefix in range(3):
            put("configs", f"readme{i}-{prefix}", bytes([prefix]) + block.encode())
    for spec in sorted((REPO / "crates/strix-zoo/zoo").glob("*.toml")):
        put("model_spec", spec.stem, spec.read_bytes())
    for i, cond in enumerate(["test.accuracy >= 0.8 and >= production", "val.map50 > 0.5", "test.macro_f1 >= same"]):
        put("configs", f"when{i}", b"\x03" + cond.encode())


def coco(images):
    doc = {
        "images": [{"id": i + 1, "file_name": name, "width": w, "height": h} for i, (name, w, h) in enumerate(images)],
        "categories": [{"id": 1, "name": "compost"}, {"id": 2, "name": "recycling"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10.5, 20, 100, 80], "area": 8000, "iscrowd": 0},
            {"id": 2, "image_id": len(images), "category_id": 2, "bbox": [0, 0, 30, 40], "iscrowd": 1},
        ],
    }
    return json.dumps(doc)


def dataset_seeds():
    sizes = [(p, *Image.open(FIX / "images" / p).size) for p in ["orange.jpg", "apple.jpg"]]
    put("coco", "fixtures", coco(sizes))
    put("label_import", "coco", b"\x00" + coco(sizes).encode())
    rows = "0 0.5 0.5 0.2 0.3\n2 0.1 0.9 0.05 0.05\n"
    put("yolo", "rows", b"\x00" + rows.encode())
    put("yolo", "data-list", b"\x01path: .\ntrain: images/train\nval: images/val\nnames: [compost, recycling, landfill]\n")
    put("yolo", "data-map", b"\x01train: a\nnc: 2\nnames:\n  0: compost\n  1: landfill\n")
    put("label_import", "yolo", b"\x01compost\nrecycling\nlandfill\n\xff" + rows.encode())
    for kind, n, name in [("images", 3, "t10k-images-idx3-ubyte.gz"), ("labels", 1, "t10k-labels-idx1-ubyte.gz")]:
        raw = gzip.decompress((FIX / "datasets/fashion-mnist" / name).read_bytes())
        head = 4 + 4 * n
        # Two items: the count rewritten, the data cut to match.
        item = 28 * 28 if kind == "images" else 1
        cut = raw[:4] + (2).to_bytes(4, "big") + raw[8:head] + raw[head : head + 2 * item]
        pick = b"\x00" if kind == "images" else b"\x01"
        put("idx", kind, pick + cut)
        put("idx", kind + "-gz", pick + gzip.compress(cut))


def image_seeds():
    fmts = [("JPEG", {"quality": 80}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {})]
    for fmt, kw in fmts:
        data = small("orange.jpg", (48, 48), fmt, **kw)
        put("image_decode", fmt.lower(), b"\x00" + data)
        put("image_decode", fmt.lower() + "-reduced", b"\x01" + data)
    frame = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(FIX / "video/vtest.avi"), "-frames:v", "2", "-vf", "scale=32:24",
         "-f", "image2pipe", "-vcodec", "ppm", "-"],
        check=True, capture_output=True,
    ).stdout
    put("ppm", "two-frames", frame)
    # Once a panic: a width times height that overflows 64 bits.
    put("ppm", "overflowing-size", b"P6\n99999999999 99999999999\n255\n")


def serve_seeds():
    jpeg = small("orange.jpg", (32, 32), "JPEG", quality=70)
    tensor = {"inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [0.5] * 12}]}
    put("serve_bodies", "kserve-json", b"\x00" + json.dumps(tensor).encode())
    nested = {"inputs": [{"name": "input", "shape": [1, 3, 1, 2], "datatype": "FP32", "data": [[[[1, 2]], [[3, 4]], [[5, 6]]]]}],
              "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    put("serve_bodies", "kserve-nested", b"\x00" + json.dumps(nested).encode())
    head = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 1, 1], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 12}}]}).encode()
    head += b" " * (-len(head) % 4)
    put("serve_bodies", "kserve-binary", b"\x01" + bytes([len(head) // 4]) + head + bytes(12))
    rek = {"Image": {"Bytes": base64.b64encode(jpeg).decode()}, "MaxLabels": 3, "MinConfidence": 10}
    put("serve_bodies", "rekognition", b"\x02" + json.dumps(rek).encode())
    put("serve_bodies", "sagemaker-json", b"\x03\x02" + json.dumps({"Image": {"Bytes": base64.b64encode(jpeg).decode()}}).encode())
    put("serve_bodies", "sagemaker-jpeg", b"\x03\x00" + jpeg)
    put("serve_bodies", "sagemaker-multipart", b"\x03\x03--x\r\nContent-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--x--\r\n")


def label_seeds():
    # pick: low bit the project (0 classify, 1 detect), the rest the route.
    put("label_api", "save-class", b"\x00" + json.dumps({"version": 0, "labels": {"class": "compost"}}).encode())
    boxes = {"version": 0, "reviewed": True, "origin": "ui",
             "labels": {"boxes": [{"class": "landfill", "x": 1, "y": 2.5, "w": 30, "h": 40}]}}
    put("label_api", "save-boxes", b"\x01" + json.dumps(boxes).encode())
    put("label_api", "cluster", b"\x02" + json.dumps({"class": "recycling"}).encode())
    put("label_api", "list", b"\x04offset=0&limit=10&filter=unlabelled&order=uncertain")
    put("label_api", "next", b"\x06after=1&filter=suggested")
    put("label_api", "image", b"\x081")


def queue_seeds():
    lineage = {"source": "runs/trash", "metrics": {"val_accuracy": 0.9}, "dataset": {"digest": "ab"}}
    fields = ["1", "classify", "1700000000", "strix-test", "0.1.0", json.dumps(lineage),
              "model.onnx", "a" * 64, "1234", "1", "production"]
    put("registry_rows", "version", b"\xff".join(f.encode() for f in fields))
    task = {"job": "j-1700000000000-0001", "index": 2, "kind": "batch", "spec": {"input": "s3://b/in", "shard": [0, 10]}}
    put("job_task", "task", json.dumps(task))


text_seeds()
dataset_seeds()
image_seeds()
serve_seeds()
label_seeds()
queue_seeds()
