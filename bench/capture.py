#!/usr/bin/env python3
"""What capturing costs a server: `strix serve` with no capture, with `--capture` at its default
rate (5% of requests) and at `--capture-rate 1` (every request), in one run.

The server classifies with EfficientNet-Lite0 (as bench/serve.py: free batch dimension,
`--backend ort`, max batch 8, 2 ms); `wrk` POSTs the fixture photos in turn over
`--concurrency` keep-alive connections for `--seconds`. The three set-ups take turns for
`--rounds` rounds, each on a fresh labelling project, and medians are reported: requests/s,
p50/p99 latency, and what capture kept (warm-up requests included) (each kept image is one file written whole and one
SQLite transaction with its suggestion, by a writer thread below inference's priority) or
dropped because the writer was busy. The limit beside them: onnxruntime alone on the
preprocessed inputs.

Usage: bench/capture.py [--seconds 15] [--rounds 3] [--concurrency 8]   (after ./scripts/setup;
apt-get install wrk)
"""
import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from serve import dynamic_batch_model, free_port, measured
from strix_run import FIXTURES, efficientnet_input, environment, onnxruntime_alone, strix_binary

SETUPS = [
    ("no capture", []),
    ("--capture (default rate 0.05)", ["--capture"]),
    ("--capture --capture-rate 1", ["--capture", "--capture-rate", "1"]),
]


def project(strix, tmp, n, env):
    """A new classification labelling project (one class folder of two photos)."""
    images = os.path.join(tmp, f"images{n}", "fruit")
    os.makedirs(images)
    for p in ["orange.jpg", "apple.jpg"]:
        shutil.copy(os.path.join(FIXTURES, "images", p), images)
    path = os.path.join(tmp, f"project{n}")
    subprocess.run([strix, "label", "import", path, "--format", "folder", "--images", os.path.dirname(images)],
                   env=env, check=True, capture_output=True)
    return path


def one(strix, spec, files, bodies, extra, args, env, tmp):
    port = free_port()
    cmd = [strix, "serve", "--backend", "ort", "--model", f"effnet={spec}", "--port", str(port),
           "--max-batch", "8", "--max-delay-ms", "2", *extra]
    if extra:
        # No cap: every sample rate 1 offers must be kept or counted as dropped while busy.
        cmd += ["--capture-max-files", "100000000", "--capture-max-bytes", str(1 << 40)]
    log = os.path.join(tmp, f"serve-{port}.log")
    server = subprocess.Popen(cmd, env=env, stderr=open(log, "w"))
    result = measured(port, "/v1/models/effnet/predict", server, files, bodies, args.seconds, args.concurrency, tmp)
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        sys.exit(f"strix serve did not stop within 60 s: {cmd}")
    err = open(log).read()
    if extra:
        m = re.search(r"capture: kept (\d+) of (\d+) requests .* (\d+) dropped while busy, (\d+) over the cap", err)
        if not m:
            sys.exit(f"no capture summary from strix serve:\n{err}")
        result["kept"], result["offered"], result["busy"], result["over"] = (int(g) for g in m.groups())
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    env = environment()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    strix = strix_binary()
    files = sorted(glob.glob(os.path.join(FIXTURES, "images/*.jpg")))
    bodies = [open(p, "rb").read() for p in files]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, spec, _ = dynamic_batch_model(tmp)
        limit, workers = onnxruntime_alone(onnx_path, [{"input": efficientnet_input(f)} for f in files], args.seconds)
        runs = {name: [] for name, _ in SETUPS}
        n = 0
        for _ in range(args.rounds):
            for name, extra in SETUPS:
                n += 1
                if extra:
                    extra = [extra[0], project(strix, tmp, n, env), *extra[1:]]
                runs[name].append(one(strix, spec, files, bodies, extra, args, env, tmp))
        print(f"Capture's cost: EfficientNet-Lite0, strix serve --backend ort, wrk {args.concurrency} connections x "
              f"{args.seconds:.0f} s, {os.cpu_count()} cores, medians of {args.rounds} interleaved rounds")
        print(f"  limit: onnxruntime alone ({workers} workers x 1 thread, preprocessed, batch 1): {limit:.1f} inferences/s")
        base = statistics.median(r["rps"] for r in runs["no capture"])
        for name, rs in runs.items():
            med = lambda k: statistics.median(r[k] for r in rs)
            line = (f"  {name:<30} {med('rps'):7.1f} req/s ({med('rps') / base:5.3f}x no capture, "
                    f"{med('rps') / limit:4.2f}x the limit)  p50 {med('p50'):5.1f} ms  p99 {med('p99'):6.1f} ms")
            if name != "no capture":
                line += (f"  kept {med('kept'):.0f} of {med('offered'):.0f}, {med('busy'):.0f} dropped while busy, "
                         f"{med('over'):.0f} over the cap")
            print(line)


if __name__ == "__main__":
    main()
