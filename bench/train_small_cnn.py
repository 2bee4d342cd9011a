"""Training speed: the small CNN on Fashion-MNIST, Strix (burn, CPU) against PyTorch (CPU) with
the same architecture, batch size, optimizer and threads, in one run. Prints seconds per epoch
of 60,000 images for both and the ratio Strix / PyTorch (goal: at most 1.3, issue 18).

    python bench/train_small_cnn.py [--images N] [--threads T] [--device cpu|cuda|wgpu]

`--device` other than cpu trains Strix on that burn backend (a build with its feature) and
PyTorch on CUDA: the GPU peer.

Needs `torch` in the Python that runs it (not installed by scripts/setup: the PyPI wheel pulls
in several GB of CUDA libraries). Strix trains from the IDX files through its loader; PyTorch
from tensors already in memory, so the ratio charges Strix for its data pipeline too.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from strix_run import FIXTURES, build_strix

DATA = os.path.join(FIXTURES, "datasets", "fashion-mnist")
EPOCH = 60_000


def load(n):
    with gzip.open(os.path.join(DATA, "train-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(os.path.join(DATA, "train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return x, y


def torch_device(device):
    """PyTorch's device against Strix's `--device`: CUDA for any GPU backend."""
    return "cpu" if device == "cpu" else "cuda"


def torch_sync(device):
    import torch

    if device != "cpu":
        torch.cuda.synchronize()


def torch_images_per_second(n, threads, batch, device="cpu"):
    import torch
    import torch.nn as nn

    dev = torch_device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    # The architecture of strix-train's `small-cnn` (models/small_cnn.rs).
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10),
    ).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, eps=1e-8)
    loss_fn = nn.CrossEntropyLoss()
    x, y = load(n)
    x = ((torch.from_numpy(x.astype(np.float32)) - 127.5) / 127.5).to(dev)
    y = torch.from_numpy(y.astype(np.int64)).to(dev)
    perm = torch.randperm(len(x), device=dev)
    model.train()

    def train(batches):
        for i in batches:
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()

    if device != "cpu":
        train(range(0, 10 * batch, batch))  # CUDA's start-up (cuBLAS, cuDNN handles) is not training
    torch_sync(device)
    start = time.perf_counter()
    train(range(0, len(x), batch))
    torch_sync(device)
    return len(x) / (time.perf_counter() - start)


def strix_images_per_second(n, threads, batch, device="cpu"):
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        # On a GPU the first epoch compiles burn's kernels: time the second.
        cmd = [build_strix(), "-q", "train", "--data", DATA, "--model", "small-cnn",
               "--epochs", "1" if device == "cpu" else "2", "--batch-size", str(batch), "--optimizer", "adamw", "--lr", "0.001",
               "--threads", str(threads), "--crop-scale-min", "1", "--color-jitter", "0", "--hflip", "false",
               "--test", "false", "--no-export", "--run-dir", run_dir, "--device", device]
        # Validation takes 10% of the images; ask for enough that N are trained on.
        cmd += ["--max-images", str(int(n / 0.9) + 1)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"strix train failed:\n{out.stderr}")
        return last_epoch(run_dir)["images_per_second"]


def last_epoch(run_dir):
    """The last line of a run's metrics.jsonl."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return json.loads(f.read().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=EPOCH, help="images per timed epoch (default: all 60,000)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "wgpu"])
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs PyTorch (pip install torch) in the Python that runs it")
    ours = strix_images_per_second(a.images, a.threads, a.batch, a.device)
    theirs = torch_images_per_second(a.images, a.threads, a.batch, a.device)
    burn = "flex" if a.device == "cpu" else a.device
    print(f"small CNN, Fashion-MNIST, batch {a.batch}, AdamW, {a.threads} threads, {a.images} images")
    print(f"  {'strix (burn ' + burn + ')':<19}{ours:8.0f} images/s  {EPOCH / ours:7.1f} s/epoch")
    print(f"  {'pytorch (' + torch_device(a.device) + ')':<19}{theirs:8.0f} images/s  {EPOCH / theirs:7.1f} s/epoch")
    print(f"  ratio strix/pytorch (seconds per epoch): {theirs / ours:.2f}x  (goal <= 1.3x)")


if __name__ == "__main__":
    main()
