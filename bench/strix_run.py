"""Shared by the benchmarks: build and run the release `strix` binary and the Python peers,
both timed from outside as whole processes, and compare their answers."""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("STRIX_FIXTURES", os.path.join(ROOT, "..", "shared", "fixtures"))


def efficientnet_input(source):
    """The Python pipeline people write for EfficientNet-Lite0: Pillow decode (`source` is a path
    or a file object), shorter side to 256 (bilinear), centre crop 224, (x - 127) / 128, NCHW."""
    import numpy as np
    from PIL import Image

    im = Image.open(source).convert("RGB")
    w, h = im.size
    s = 256 / min(w, h)
    rw, rh = round(w * s), round(h * s)
    im = im.resize((rw, rh), Image.BILINEAR)
    left, top = (rw - 224) // 2, (rh - 224) // 2
    x = np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return ((x - 127.0) / 128.0).transpose(2, 0, 1)[None]


def softmax(logits):
    import numpy as np

    p = np.exp(logits - logits.max())
    return p / p.sum()


def nanodet_input(img):
    """NanoDet-m 416's input for a decoded BGR image (OpenCV): resized to 416x416 (bilinear),
    normalised in BGR, NCHW."""
    import cv2
    import numpy as np

    mean, std = (103.53, 116.28, 123.675), (57.375, 57.12, 58.395)
    x = cv2.resize(img, (416, 416), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    return ((x - mean) / std).astype(np.float32).transpose(2, 0, 1)[None]


def onnxruntime_alone(onnx_path, feeds, seconds):
    """Inferences/s of the bare model, the physical limit of the pipelines that wrap it: one
    session per core, one thread each, on `feeds` (input dicts, already preprocessed: no
    decoding, no transport) in turn. Returns (inferences/s, workers)."""
    import threading

    import onnxruntime as ort

    workers = os.cpu_count()
    counts = [0] * workers
    stop = [False]

    def worker(k):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        session.run(None, feeds[0])
        while not stop[0]:
            session.run(None, feeds[counts[k] % len(feeds)])
            counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    time.sleep(2)  # sessions built and warm
    start_counts, start = sum(counts), time.perf_counter()
    time.sleep(seconds)
    done, took = sum(counts) - start_counts, time.perf_counter() - start
    stop[0] = True
    for t in threads:
        t.join()
    return done / took, workers


def nanodet_detector(model_path):
    """The Python pipeline people write for NanoDet-m 416 on a decoded BGR image (OpenCV):
    resize to 416x416 (bilinear), normalise in BGR, run, decode the GFL heads (softmax over
    distance bins), threshold 0.3, per-class NMS at IoU 0.5, boxes back to image pixels.
    Returns `detect(img) -> [(class, score, x1, y1, x2, y2)]`."""
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

    def detect(img):
        h, w = img.shape[:2]
        outs = dict(zip(names, session.run(None, {"input_1:0": nanodet_input(img)})))
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

    return detect


def environment():
    """The benchmarks' environment, the binary built (see `build_strix`)."""
    if not os.environ.get("ORT_DYLIB_PATH"):
        sys.exit("ORT_DYLIB_PATH is unset: run ./scripts/setup and `source scripts/env.sh` first")
    build_strix()
    return dict(os.environ, STRIX_MODEL_PATH=os.path.join(FIXTURES, "models"))


def build_strix():
    """`strix_binary()`, the release build brought up to date first unless STRIX_BIN names a
    binary (e.g. target/debug/strix, whose dependencies, burn included, are optimised too)."""
    if not os.environ.get("STRIX_BIN"):
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "strix"], cwd=ROOT, check=True)
    return strix_binary()


def strix_binary():
    """STRIX_BIN, else the release binary itself: timing `cargo run` would time cargo's own
    start too."""
    if os.environ.get("STRIX_BIN"):
        return os.environ["STRIX_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "strix")


def timed(cmd, env=None):
    """Run `cmd` to its end: (wall seconds from start to exit, stdout). Every side of every
    benchmark is timed this way, from outside and start-up included, so no side reports its own
    rate; exits with the command's stderr on failure."""
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{out.stderr}")
    return took, out.stdout


def peer_command(script, files):
    """The Python side as its own process: `SCRIPT --peer FILES...` prints one JSON answer per
    line, as `strix predict --json` does."""
    return [sys.executable, script, "--peer", *files]


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def compare(peer_name, peer_script, strix_args, files, rounds, env, agree, variants=None):
    """Run the Python peer and Strix on both backends `rounds` times, interleaved, each as a
    whole process over the same files; print the median rates, the ratios Strix / peer, and how
    often the answers agree (`agree(peer_answers, strix_answers) -> (agreeing, total)`).
    `variants` (name -> strix flags) replaces the two backends, e.g. to add a GPU run."""
    variants = variants or {f"--backend {b}": ["--backend", b] for b in ("ort", "tract")}
    runs = {name: [] for name in ["python", *variants]}
    answers = {}
    for _ in range(rounds):
        took, out = timed(peer_command(peer_script, files), env)
        runs["python"].append(len(files) / took)
        answers["python"] = json_lines(out)
        for name, flags in variants.items():
            took, out = timed([strix_binary(), "predict", "--json", *strix_args, *flags, *files], env)
            runs[name].append(len(files) / took)
            answers[name] = json_lines(out)
    py = statistics.median(runs["python"])
    width = max(len(peer_name) + 9, *(len(name) + 6 for name in variants))
    print(f"  {'python (' + peer_name + ')':<{width}}: {py:7.1f} images/s")
    for name in variants:
        ours = statistics.median(runs[name])
        same, total = agree(answers["python"], answers[name])
        print(f"  {'strix ' + name:<{width}}: {ours:7.1f} images/s   ratio {ours / py:.2f}x   "
              f"answers agree on {same}/{total}")
        if total == 0 or same < 0.95 * total:
            sys.exit(f"strix {name} and the Python peer disagree on {total - same} of {total}: "
                     "the rates compare different work")


def box_iou(a, b):
    """IoU of two [x1, y1, x2, y2] boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
