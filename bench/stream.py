#!/usr/bin/env python3
"""Video throughput: `strix stream` vs OpenCV + onnxruntime in Python, NanoDet-m 416 on the
pedestrian video (H.264, 768x576).

Both sides do the whole job per frame: decode the video (FFmpeg in both: OpenCV's
VideoCapture links it), resize to 416x416, normalise, run NanoDet, decode the boxes (softmax
over distance bins, threshold 0.3, per-class NMS), boxes back to frame pixels. Strix also
tracks. Every frame is processed (policy `all`). Both are timed once the model is loaded and
has answered once: Python from after its warm-up frame to its last answer, Strix from its first
answer to its last (its summary's fps); Strix's rate from the very start of its run (ffprobe,
FFmpeg's start, the sessions' first inference) is printed beside it. The file is played
--passes times in a row.

Also printed: FFmpeg decoding the video to nowhere vs into the PPM pipe Strix reads (what the
child-process design costs over a binding, which would still decode and convert).

Usage: bench/stream.py [--passes N] [--rounds N]   (after ./scripts/setup)
"""
import argparse
import json
import os
import statistics
import subprocess
import time

from strix_run import FIXTURES, environment, nanodet_detector, strix

VIDEO = os.path.join(FIXTURES, "video", "vtest_10s_h264.mp4")
FRAMES = 100


def python_fps(model, passes):
    import cv2

    detect = nanodet_detector(model)
    video = cv2.VideoCapture(VIDEO)
    ok, frame = video.read()
    detect(frame)  # warm-up
    frames = 0
    start = time.perf_counter()
    for _ in range(passes):
        video = cv2.VideoCapture(VIDEO)
        while True:
            ok, frame = video.read()
            if not ok:
                break
            detect(frame)
            frames += 1
    return frames / (time.perf_counter() - start)


def strix_fps(backend, passes, env):
    args = ["stream", VIDEO, "--model", "nanodet_m_416", "--policy", "all", "--backend", backend, "--json", "-q"]
    if passes > 1:
        args += ["--loop", "--max-frames", str(FRAMES * passes)]
    s = json.loads(strix(args, env).stdout.strip().splitlines()[-1])
    src = s["sources"][0]
    assert src["frames_processed"] == FRAMES * passes, src
    # Steady: from the first answer to the last, as the Python loop is timed after its warm-up
    # frame. Whole: from opening the video (ffprobe, FFmpeg's start, the sessions' first runs).
    return src["fps"], src["frames_processed"] / s["wall_s"], src["lag_ms"]["p50"]


def ffmpeg_fps(*out_args):
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", VIDEO, *out_args], check=True, stdout=subprocess.DEVNULL)
    return FRAMES / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=3, help="times the 100-frame video plays per run (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, interleaved; medians reported (default 3)")
    args = ap.parse_args()
    env = environment()
    model = os.path.join(FIXTURES, "models", "detect", "nanodet_m_416.onnx")
    runs = {"python": [], "ort": [], "tract": []}
    whole = {"ort": [], "tract": []}
    lags = {"ort": [], "tract": []}
    for _ in range(args.rounds):
        runs["python"].append(python_fps(model, args.passes))
        for backend in ("ort", "tract"):
            fps, whole_fps, lag = strix_fps(backend, args.passes, env)
            runs[backend].append(fps)
            whole[backend].append(whole_fps)
            lags[backend].append(lag)
    print(f"NanoDet-m 416 on {os.path.basename(VIDEO)} x {args.passes} ({FRAMES * args.passes} frames), "
          f"{os.cpu_count()} cores, median of {args.rounds} rounds")
    py = statistics.median(runs["python"])
    print(f"  python (OpenCV + onnxruntime): {py:6.1f} frames/s")
    for backend in ("ort", "tract"):
        ours = statistics.median(runs[backend])
        all_in = statistics.median(whole[backend])
        print(f"  strix stream --backend {backend:<5}  : {ours:6.1f} frames/s   ratio {ours / py:.2f}x   "
              f"(with start-up {all_in:.1f} frames/s, {all_in / py:.2f}x; lag p50 {statistics.median(lags[backend]):.0f} ms)")
    null = statistics.median(ffmpeg_fps("-pix_fmt", "rgb24", "-f", "null", "-") for _ in range(3))
    pipe = statistics.median(ffmpeg_fps("-f", "image2pipe", "-c:v", "ppm", "-") for _ in range(3))
    print(f"  ffmpeg decode + RGB conversion only: {null:.0f} frames/s; + PPM into a pipe: {pipe:.0f} frames/s")


if __name__ == "__main__":
    main()
