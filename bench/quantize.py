#!/usr/bin/env python3
"""int8 quantisation: `strix models optimize --int8` against ONNX Runtime's own quantiser, and
both against the float model (the limit an int8 model is measured from).

Calibration: the fixture photos at even positions and every 20th frame of vtest.avi; held out:
the photos at odd positions and the frames halfway between (so no held-out image was seen in
calibration). Both quantisers make a QDQ model with per-channel weights from the same
calibration images: Strix with its defaults (percentile 99.999), ONNX Runtime's
`quantize_static` with its defaults (MinMax). Then, on ONNX Runtime (all cores, one image per
run, preprocessed inputs, no decoding), in interleaved rounds:

- images/s of the float model, of Strix's int8 model and of ONNX Runtime's int8 model;
- top-1 agreement of each int8 model with the float one on the held-out images, and how many of
  the disagreements are near ties of the float model (its top two within 0.02 probability).

Usage: bench/quantize.py [--rounds N] [--passes N]   (after ./scripts/setup; builds release strix)
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

from strix_run import FIXTURES, efficientnet_input, environment, softmax, strix_binary

NEAR_TIE = 0.02


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


def strix_int8(sets, work, env):
    home = os.path.join(work, "home")
    cmd = [strix_binary(), "models", "optimize", "efficientnet_lite0", "--int8", "--calibration", sets["calibration"],
           "--holdout", sets["held_out"], "--name", "bench-int8", "--backend", "ort", "--min-agreement", "0", "--json"]
    run = subprocess.run(cmd, env=dict(env, STRIX_HOME=home), capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"strix models optimize failed:\n{run.stderr}")
    sys.stderr.write(run.stderr)
    record = json.loads(run.stdout)
    out = os.path.join(work, "strix-int8")
    subprocess.run([strix_binary(), "models", "download", "bench-int8:1", "--out", out],
                   env=dict(env, STRIX_HOME=home), check=True, capture_output=True)
    return os.path.join(out, "model.int8.onnx"), record


def ort_int8(model, sets, work):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    files = sorted(glob.glob(os.path.join(sets["calibration"], "*")))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(files)

        def get_next(self):
            f = next(self.it, None)
            return None if f is None else {"input": efficientnet_input(f)}

    out = os.path.join(work, "ort-int8.onnx")
    quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; medians reported (default 5)")
    ap.add_argument("--passes", type=int, default=3, help="passes over the held-out inputs per round (default 3)")
    args = ap.parse_args()
    import numpy as np
    import onnxruntime as ort

    env = environment()
    model = os.path.join(FIXTURES, "models", "classify", "efficientnet_lite0.onnx")
    with tempfile.TemporaryDirectory() as work:
        sets = image_sets(work)
        ours, record = strix_int8(sets, work, env)
        theirs = ort_int8(model, sets, work)
        held = sorted(glob.glob(os.path.join(sets["held_out"], "*")))
        inputs = [efficientnet_input(f) for f in held]
        sessions = {name: ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                    for name, path in [("float", model), ("strix int8", ours), ("onnxruntime int8", theirs)]}
        probs = {name: [softmax(s.run(None, {"input": x})[0][0]) for x in inputs] for name, s in sessions.items()}
        rates = {name: [] for name in sessions}
        for _ in range(args.rounds):
            for name, s in sessions.items():
                start = time.perf_counter()
                for _ in range(args.passes):
                    for x in inputs:
                        s.run(None, {"input": x})
                rates[name].append(args.passes * len(inputs) / (time.perf_counter() - start))
        sizes = {"float": os.path.getsize(model), "strix int8": os.path.getsize(ours),
                 "onnxruntime int8": os.path.getsize(theirs)}

    print(f"EfficientNet-Lite0, onnxruntime {ort.__version__}, {os.cpu_count()} cores; "
          f"{len(held)} held-out images, median of {args.rounds} rounds")
    base = statistics.median(rates["float"])
    for name in sessions:
        r = statistics.median(rates[name])
        line = f"  {name:17s} {r:7.1f} images/s  {r / base:4.2f}x float  {sizes[name] / 2**20:5.1f} MiB"
        if name != "float":
            agree = ties = 0
            for f, q in zip(probs["float"], probs[name]):
                same = int(np.argmax(f)) == int(np.argmax(q))
                agree += same
                top2 = np.sort(f)[::-1][:2]
                ties += (not same) and top2[0] - top2[1] < NEAR_TIE
            line += f"  top-1 agreement {agree}/{len(held)} ({100 * agree / len(held):.1f}%), {ties} near ties among the rest"
        print(line)
    ours_rate, theirs_rate = statistics.median(rates["strix int8"]), statistics.median(rates["onnxruntime int8"])
    print(f"  strix int8 / onnxruntime int8: {ours_rate / theirs_rate:.2f}x")
    print(f"  strix's own gate: {record['lineage']['gate']['agreement'] * 100:.1f}% agreement, "
          f"{record['lineage']['metrics']['speedup']:.2f}x measured by strix")


if __name__ == "__main__":
    main()
