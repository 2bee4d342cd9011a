#!/usr/bin/env python3
"""Batch transform throughput: `strix batch` through the NATS JetStream queue with one and two
workers (one thread each), against in-process `strix predict` over the same images on one
thread, and against the physical limit (EfficientNet-Lite0 alone in onnxruntime on preprocessed
inputs, one session per core).

- The images: crops of the fixture photos at shifting offsets, 160x160 JPEGs, made once.
- Each round, interleaved: `strix predict --threads 1 --workers 1`; then `strix batch ... --wait`
  with one worker, then with two (`strix worker --threads 1`, started before the batch is
  submitted, as they would be in a deployment; the model loads on the first shard and is timed).
  Every side is timed from outside, start to exit.
- The answers of every batch run are compared with predict's (top-1 per image): a run that
  differs stops the benchmark.

Goals (issue 33): two workers at least 1.8x one; one worker's rate at least 0.95x predict's
(the queue's overhead at most 5% at shard size 64).

Usage: bench/batch.py [--images N] [--rounds R] [--shard-size S] [--queue URL]
(after ./scripts/setup and `source scripts/env.sh`; NATS with JetStream at --queue).
"""
import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from strix_run import FIXTURES, efficientnet_input, environment, json_lines, onnxruntime_alone, strix_binary, timed


def make_images(folder, n):
    from PIL import Image

    sources = [Image.open(os.path.join(FIXTURES, "images", f)).convert("RGB")
               for f in ("apple.jpg", "baboon.jpg", "butterfly.jpg", "messi5.jpg", "orange.jpg")]
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        src = sources[i % len(sources)]
        w, h = src.size
        short = min(w, h)
        side = short // 2 + (i * 7) % (short // 2)
        x, y = (i * 13) % (w - side + 1), (i * 29) % (h - side + 1)
        src.crop((x, y, x + side, y + side)).resize((160, 160)).save(os.path.join(folder, f"img-{i:05}.jpg"), quality=90)


def queue_config(folder, url, tag):
    """Streams and bucket of this run alone (no task of an earlier run is waiting in them)."""
    unique = f"{os.getpid()}_{int(time.time() * 1e6)}_{tag}"
    path = os.path.join(folder, f"queue-{tag}.toml")
    with open(path, "w") as f:
        f.write(f'url = "{url}"\nstream = "B_JOBS_{unique}"\nsubject = "b.{unique}"\n'
                f'state_bucket = "B_STATE_{unique}"\nlog_stream = "B_LOGS_{unique}"\nconsumer = "workers"\n')
    return path


def top1(lines):
    return {os.path.basename(l["Image"]): l["Labels"][0]["ClassId"] for l in lines if l.get("Labels")}


def batch_round(env, images, out, config, workers, shard_size):
    """images/s of `strix batch --wait` with `workers` one-thread workers, and its answers."""
    procs = [subprocess.Popen([strix_binary(), "worker", "--queue-config", config, "--threads", "1",
                               "--backend", "ort", "--name", f"w{i}", "-q"], env=env)
             for i in range(workers)]
    try:
        shutil.rmtree(out, ignore_errors=True)
        took, _ = timed([strix_binary(), "batch", images, "--out", out, "--model", "efficientnet_lite0",
                         "--shard-size", str(shard_size), "--queue-config", config, "--wait", "-q",
                         "--backend", "ort"], env)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    answers = []
    for part in sorted(glob.glob(os.path.join(out, "part-*.jsonl"))):
        with open(part) as f:
            answers += json_lines(f.read())
    return took, answers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--queue", default="nats://127.0.0.1:4222")
    args = ap.parse_args()
    env = environment()
    work = tempfile.mkdtemp(prefix="strix-bench-batch-")
    env = dict(env, STRIX_HOME=os.path.join(work, "home"))
    env.pop("STRIX_QUEUE", None)
    images = os.path.join(work, "images")
    make_images(images, args.images)
    n = args.images
    rates = {"predict": [], "batch, 1 worker": [], "batch, 2 workers": []}
    try:
        for r in range(args.rounds):
            took, out = timed([strix_binary(), "predict", images, "--json", "-q", "--backend", "ort",
                               "--threads", "1", "--workers", "1"], env)
            rates["predict"].append(n / took)
            reference = top1(json_lines(out))
            for workers in (1, 2):
                config = queue_config(work, args.queue, f"r{r}w{workers}")
                took, answers = batch_round(env, images, os.path.join(work, "out"), config, workers, args.shard_size)
                name = f"batch, {workers} worker" + ("s" if workers > 1 else "")
                rates[name].append(n / took)
                if len(answers) != n or top1(answers) != reference:
                    sys.exit(f"{name}: {len(answers)} answers, not the same top-1 as predict: the rates compare different work")
        model = os.path.join(FIXTURES, "models", "classify", "efficientnet_lite0.onnx")
        files = sorted(glob.glob(os.path.join(images, "*.jpg")))[:64]
        feeds = [{"input": efficientnet_input(f)} for f in files]
        limit, cores = onnxruntime_alone(model, feeds, 10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"{n} images of 160x160, EfficientNet-Lite0 on ONNX Runtime, shard size {args.shard_size}, "
          f"medians of {args.rounds} rounds:")
    print(f"  onnxruntime alone ({cores} sessions x 1 thread): {limit:7.1f} inferences/s (the limit)")
    for k, v in med.items():
        print(f"  strix {k:<17}: {v:7.1f} images/s")
    one, two = med["batch, 1 worker"], med["batch, 2 workers"]
    print(f"  2 workers / 1 worker: {two / one:.2f}x (goal >= 1.8x); "
          f"1 worker / predict on 1 thread: {one / med['predict']:.3f} (goal >= 0.95); "
          f"2 workers / limit: {two / limit:.2f}")


if __name__ == "__main__":
    main()
