"""Shared by the benchmarks: build and run the release `strix` binary, read its throughput."""
import os
import re
import statistics
import subprocess
import sys

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


def environment():
    if not os.environ.get("ORT_DYLIB_PATH"):
        sys.exit("ORT_DYLIB_PATH is unset: run ./scripts/setup and `source scripts/env.sh` first")
    subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "strix"], cwd=ROOT, check=True)
    return dict(os.environ, STRIX_MODEL_PATH=os.path.join(FIXTURES, "models"))


def images_per_second(args, files, env):
    """Run `strix predict ARGS FILES --json` and return the images/s it reports (timed from the
    first image, after the model is loaded)."""
    cmd = ["cargo", "run", "--release", "--locked", "-q", "-p", "strix", "--", "predict", "--json", *args, *files]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"strix {' '.join(args)} failed:\n{out.stderr}")
    m = re.search(r"([0-9.]+) images/s", out.stderr)
    if not m:
        sys.exit(f"no throughput in strix output:\n{out.stderr}")
    return float(m.group(1))


def compare(peer_name, peer, strix_args, files, rounds, env):
    """Run the Python peer and Strix on both backends `rounds` times, interleaved, and print
    the medians and the ratios Strix / peer."""
    runs = {"python": [], "ort": [], "tract": []}
    for _ in range(rounds):
        runs["python"].append(peer(files))
        for backend in ("ort", "tract"):
            runs[backend].append(images_per_second([*strix_args, "--backend", backend], files, env))
    py = statistics.median(runs["python"])
    width = len(peer_name) + 9
    print(f"  {'python (' + peer_name + ')':<{width}}: {py:7.1f} images/s")
    for backend in ("ort", "tract"):
        ours = statistics.median(runs[backend])
        print(f"  {'strix --backend ' + backend:<{width}}: {ours:7.1f} images/s   ratio {ours / py:.2f}x")
