#!/usr/bin/env python3
"""int8 quantisation: `strix models optimize --int8` against ONNX Runtime's own quantiser, and
both against the float model (the limit an int8 model is measured from), for EfficientNet-Lite0
and NanoDet-m.

Calibration: the fixture photos at even positions and every 20th frame of vtest.avi; held out:
the photos at odd positions and the frames halfway between (so no held-out image was seen in
calibration). Both quantisers make a QDQ model with per-channel weights from the same
calibration images: Strix with its defaults (percentile 99.999), ONNX Runtime's
`quantize_static` with its defaults (MinMax). Then, on ONNX Runtime (all cores, one image per
run, preprocessed inputs, no decoding), in interleaved rounds:

- images/s of the float model, of Strix's int8 model and of ONNX Runtime's int8 model;
- EfficientNet, for each int8 model against the float one on the held-out images: top-1
  agreement where the float model's top two differ by at least 0.05 in probability (closer,
  rounding alone can swap them: those near ties are counted and left out, as Strix's gate
  does), and the mean KL divergence of the int8 probabilities from the float ones over every
  held-out image; NanoDet: Strix's gate figure (boxes found at half the score threshold).

Usage: bench/quantize.py [--rounds N] [--passes N] [--models efficientnet,nanodet]
(after ./scripts/setup; builds release strix)
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from strix_run import FIXTURES, efficientnet_input, environment, nanodet_input, softmax, strix_binary

# As strix-optimize's gate::NEAR_TIE.
NEAR_TIE = 0.05


def frames(video, every, offset, out):
    """Frames offset, offset+every, ... of `video` as JPEGs in `out`."""
    os.makedirs(out, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-i", video, "-vf", f"select=eq(mod(n\\,{every})\\,{offset})", "-vsync", "vfr",
         os.path.join(out, "frame%03d.jpg")],
        check=True,
    )


def image_sets(work):
    photos = sorted(glob.glob(os.path.join(FIXTURES, "images", "*")))
    video = os.path.join(FIXTURES, "video", "vtest.avi")
    sets = {}
    for name, photo_part, offset in [("calibration", photos[::2], 0), ("held_out", photos[1::2], 10)]:
        d = os.path.join(work, name)
        frames(video, 20, offset, d)
        for p in photo_part:
            os.symlink(p, os.path.join(d, os.path.basename(p)))
        sets[name] = d
    return sets


def nanodet_file(path):
    """NanoDet-m's input as the Python pipeline makes it from a file: OpenCV decode (BGR),
    then `strix_run.nanodet_input`."""
    import cv2

    return nanodet_input(cv2.imread(path))


MODELS = {
    "efficientnet": ("efficientnet_lite0", "classify/efficientnet_lite0.onnx", efficientnet_input),
    "nanodet": ("nanodet_m_416", "detect/nanodet_m_416.onnx", nanodet_file),
}


def strix_int8(zoo, sets, work, env):
    home = os.path.join(work, "home")
    name = f"bench-{zoo.replace('_', '-')}"
    cmd = [strix_binary(), "models", "optimize", zoo, "--int8", "--calibration", sets["calibration"],
           "--holdout", sets["held_out"], "--name", name, "--backend", "ort", "--min-agreement", "0", "--json"]
    run = subprocess.run(cmd, env=dict(env, STRIX_HOME=home), capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"strix models optimize failed:\n{run.stderr}")
    sys.stderr.write(run.stderr)
    record = json.loads(run.stdout)
    out = os.path.join(work, name)
    subprocess.run([strix_binary(), "models", "download", f"{name}:1", "--out", out],
                   env=dict(env, STRIX_HOME=home), check=True, capture_output=True)
    return os.path.join(out, "model.int8.onnx"), record


def ort_int8(model, prep, sets, work):
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    files = sorted(glob.glob(os.path.join(sets["calibration"], "*")))
    input_name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(files)

        def get_next(self):
            f = next(self.it, None)
            return None if f is None else {input_name: prep(f)}

    out = os.path.join(work, os.path.basename(model).replace(".onnx", ".ort-int8.onnx"))
    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def fidelity(float_outputs, int8_outputs):
    """Top-1 agreement on the decisive images, the near ties left out, the mean KL divergence."""
    import numpy as np

    agree = decisive = 0
    kl = []
    for f, q in zip(float_outputs, int8_outputs):
        pf, pq = softmax(f[0][0]), softmax(q[0][0])
        kl.append(float(np.sum(pf * np.log(np.maximum(pf, 1e-30) / np.maximum(pq, 1e-12)))))
        top2 = np.sort(pf)[::-1][:2]
        if top2[0] - top2[1] >= NEAR_TIE:
            decisive += 1
            agree += int(np.argmax(pf)) == int(np.argmax(pq))
    ties = len(kl) - decisive
    share = 100 * agree / decisive if decisive else float("nan")
    return (f"top-1 agreement {agree}/{decisive} ({share:.1f}%) with {ties} near ties left out, "
            f"mean KL {statistics.mean(kl):.4f} nats")


def measure(key, sets, work, env, args):
    import onnxruntime as ort

    zoo, rel, prep = MODELS[key]
    model = os.path.join(FIXTURES, "models", rel)
    ours, record = strix_int8(zoo, sets, work, env)
    theirs = ort_int8(model, prep, sets, work)
    held = sorted(glob.glob(os.path.join(sets["held_out"], "*")))
    inputs = [prep(f) for f in held]
    paths = {"float": model, "strix int8": ours, "onnxruntime int8": theirs}
    sessions = {name: ort.InferenceSession(path, providers=["CPUExecutionProvider"]) for name, path in paths.items()}
    input_name = sessions["float"].get_inputs()[0].name
    outputs = {name: [s.run(None, {input_name: x}) for x in inputs] for name, s in sessions.items()}
    rates = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            for _ in range(args.passes):
                for x in inputs:
                    s.run(None, {input_name: x})
            rates[name].append(args.passes * len(inputs) / (time.perf_counter() - start))

    print(f"{zoo}, onnxruntime {ort.__version__}, {os.cpu_count()} cores; "
          f"{len(held)} held-out images, median of {args.rounds} rounds")
    base = statistics.median(rates["float"])
    for name in sessions:
        r = statistics.median(rates[name])
        line = f"  {name:17s} {r:7.1f} images/s  {r / base:4.2f}x float  {os.path.getsize(paths[name]) / 2**20:5.1f} MiB"
        if name != "float" and key == "efficientnet":
            line += "  " + fidelity(outputs["float"], outputs[name])
        print(line)
    ours_rate, theirs_rate = statistics.median(rates["strix int8"]), statistics.median(rates["onnxruntime int8"])
    gate = record["lineage"]["gate"]
    print(f"  strix int8 / onnxruntime int8: {ours_rate / theirs_rate:.2f}x")
    kl = f", mean KL {gate['mean_kl']:.4f} nats" if gate.get("mean_kl") is not None else ""
    print(f"  strix's gate: {gate['measure']} {gate['agreement'] * 100:.1f}% on {gate['held_out']} images "
          f"({gate['near_ties']} near ties left out{kl}), {record['lineage']['metrics']['speedup']:.2f}x measured by strix")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; medians reported (default 5)")
    ap.add_argument("--passes", type=int, default=3, help="passes over the held-out inputs per round (default 3)")
    ap.add_argument("--models", default="efficientnet,nanodet", help="comma-separated: efficientnet, nanodet")
    args = ap.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory() as work:
        sets = image_sets(work)
        for key in args.models.split(","):
            measure(key, sets, work, env, args)


if __name__ == "__main__":
    main()
