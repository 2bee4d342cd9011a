"""Training speed at ImageNet size: ResNet-18 steps (batch 8, 224x224, SGD with momentum) in
Strix (burn, CPU) against PyTorch (CPU) with the same architecture and threads, in one run.
Prints seconds per step for both and the ratio Strix / PyTorch (goal: at most 1.5, issue 18).

    python bench/train_resnet18.py [--steps N] [--threads T] [--rounds R] [--device cpu|cuda|wgpu]

Strix trains from scratch on a folder of the fixture photos (decoded, cropped and resized by
its loader each step); PyTorch on tensors already in memory, so the ratio charges Strix for its
data pipeline too. Rounds alternate the two and the medians are printed. `--device` other than
cpu trains Strix on that burn backend (a build with its feature) and PyTorch on CUDA.
Needs `torch` in the Python that runs it (not installed by scripts/setup).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from strix_run import FIXTURES, build_strix
from train_small_cnn import last_epoch, torch_device, torch_sync

PHOTOS = os.path.join(FIXTURES, "images")
BATCH = 8
SIZE = 224


def torch_resnet18(classes):
    import torch.nn as nn

    class Basic(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.down = None
            if stride != 1 or c_in != c_out:
                self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
            return (y + (x if self.down is None else self.down(x))).relu()

    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for width, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        layers += [Basic(c, width, stride), Basic(width, width, 1)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    return nn.Sequential(*layers)


def torch_seconds_per_step(steps, threads, device):
    import torch
    import torch.nn as nn

    dev = torch_device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_resnet18(2).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=dev)
    y = torch.randint(0, 2, (BATCH,), device=dev)
    model.train()
    for i in range(steps + 1):
        if i == 1:  # the first step allocates; time the rest
            torch_sync(device)
            start = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    torch_sync(device)
    return (time.perf_counter() - start) / steps


def photo_folder(root, images):
    """Two class folders holding the fixture photos, repeated to `images` files in all."""
    photos = sorted(p for p in os.listdir(PHOTOS) if p.endswith((".jpg", ".png")))
    for i in range(images):
        d = os.path.join(root, "ab"[i % 2])
        os.makedirs(d, exist_ok=True)
        src = photos[i % len(photos)]
        shutil.copy(os.path.join(PHOTOS, src), os.path.join(d, f"{i}_{src}"))


def strix_seconds_per_step(data, steps, threads, device):
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        # One validation image per class so that `steps` full batches are trained on.
        # On a GPU the first epoch compiles burn's kernels: time the second.
        cmd = [build_strix(), "-q", "train", "--data", data, "--model", "resnet18", "--image-size", str(SIZE),
               "--epochs", "1" if device == "cpu" else "2", "--batch-size", str(BATCH), "--optimizer", "sgd", "--lr", "0.01",
               "--threads", str(threads), "--test", "false", "--no-export", "--run-dir", run_dir,
               "--max-images", str(steps * BATCH + 2), "--val-fraction", str(2 / (steps * BATCH + 2)),
               "--device", device]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"strix train failed:\n{out.stderr}")
        return BATCH / last_epoch(run_dir)["images_per_second"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per round (default 12)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "wgpu"])
    a = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs PyTorch (pip install torch) in the Python that runs it")
    with tempfile.TemporaryDirectory() as data:
        photo_folder(data, a.steps * BATCH + 2)
        ours, theirs = [], []
        for _ in range(a.rounds):
            ours.append(strix_seconds_per_step(data, a.steps, a.threads, a.device))
            theirs.append(torch_seconds_per_step(a.steps, a.threads, a.device))
    s, t = statistics.median(ours), statistics.median(theirs)
    print(f"ResNet-18 training step, batch {BATCH}, {SIZE}x{SIZE}, SGD momentum, {a.threads} threads, "
          f"{a.steps} steps x {a.rounds} rounds (medians)")
    burn = "flex" if a.device == "cpu" else a.device
    print(f"  {'strix (burn ' + burn + ')':<19}{s:6.3f} s/step  ({', '.join(f'{v:.3f}' for v in ours)})")
    print(f"  {'pytorch (' + torch_device(a.device) + ')':<19}{t:6.3f} s/step  ({', '.join(f'{v:.3f}' for v in theirs)})")
    print(f"  ratio strix/pytorch (seconds per step): {s / t:.2f}x  (goal <= 1.5x)")


if __name__ == "__main__":
    main()
