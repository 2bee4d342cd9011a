#!/usr/bin/env python3
"""Video throughput: `strix stream` vs OpenCV + onnxruntime in Python, NanoDet-m 416 on the
pedestrian video (H.264, 768x576).

Both sides do the whole job per frame: decode the video (FFmpeg in both: OpenCV's
VideoCapture links it), resize to 416x416, normalise, run NanoDet, decode the boxes (softmax
over distance bins, threshold 0.3, per-class NMS), boxes back to frame pixels. Strix also
tracks. Every frame is processed (policy `all`). Both run as their own process and are timed
the same way, from outside: from start to exit, model load included. Their detections are
compared frame by frame (confident boxes, score >= 0.5, matched by class and IoU >= 0.8), so
the rates compare the same work. The file is played --passes times in a row.

The yardstick is the physical limit: NanoDet alone in onnxruntime on preprocessed frames, as
many workers as Strix runs (one per core, one thread each), no decoding and no boxes, measured
in every round beside the others.

Also printed: FFmpeg decoding the video to nowhere vs into the PPM pipe Strix reads (what the
child-process design costs over a binding, which would still decode and convert).

Usage: bench/stream.py [--passes N] [--rounds N] [--limit-seconds S]   (after ./scripts/setup)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from strix_run import (FIXTURES, box_iou, environment, json_lines, nanodet_detector, nanodet_input,
                       onnxruntime_alone, peer_command, strix_binary, timed)

VIDEO = os.path.join(FIXTURES, "video", "vtest_10s_h264.mp4")
FRAMES = 100


def peer(model, passes):
    """The Python pipeline over the video `passes` times: one JSON line per frame, its boxes."""
    import cv2

    detect = nanodet_detector(model)
    labels = open(os.path.join(FIXTURES, "models", "detect", "coco80_labels.txt")).read().splitlines()
    for _ in range(passes):
        video = cv2.VideoCapture(VIDEO)
        while True:
            ok, frame = video.read()
            if not ok:
                break
            boxes = [[labels[int(c)], float(s), x1, y1, x2, y2] for c, s, x1, y1, x2, y2 in detect(frame)]
            print(json.dumps({"boxes": boxes}))


def python_run(passes, env):
    took, out = timed(peer_command(__file__, [str(passes)]), env)
    frames = json_lines(out)
    return len(frames) / took, [f["boxes"] for f in frames]


def strix_run(backend, passes, env, events):
    args = ["stream", VIDEO, "--model", "nanodet_m_416", "--policy", "all", "--backend", backend, "--json", "-q"]
    args += ["--frame-events", "--events", events]
    if passes > 1:
        args += ["--loop", "--max-frames", str(FRAMES * passes)]
    took, out = timed([strix_binary(), *args], env)
    s = json.loads(out.strip().splitlines()[-1])
    src = s["sources"][0]
    assert src["frames_processed"] == FRAMES * passes, src
    with open(events) as f:
        frames = [e for e in map(json.loads, f) if e["type"] == "frame"]
    frames.sort(key=lambda e: e["frame"])
    boxes = [[[d["class"], d["score"], *d["bbox"]] for d in e.get("detections", [])] for e in frames]
    return src["frames_processed"] / took, boxes, src["lag_ms"]["p50"]


def agreement(python, strix):
    """Confident Python boxes (score >= 0.5) that Strix also found in the same frame."""
    agree = total = 0
    for p, s in zip(python, strix):
        for name, score, *box in p:
            if score < 0.5:
                continue
            total += 1
            agree += any(n == name and box_iou(box, b) >= 0.8 for n, _, *b in s)
    return agree, total


def preprocessed_frames():
    """The video's frames as NanoDet's inputs, made beforehand for the limit's runs."""
    import cv2

    video, feeds = cv2.VideoCapture(VIDEO), []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        feeds.append({"input_1:0": nanodet_input(frame)})
    return feeds


def ffmpeg_fps(*out_args):
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", VIDEO, *out_args], check=True, stdout=subprocess.DEVNULL)
    return FRAMES / (time.perf_counter() - start)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        return peer(os.path.join(FIXTURES, "models", "detect", "nanodet_m_416.onnx"), int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passes", type=int, default=3, help="times the 100-frame video plays per run (default 3)")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each side, interleaved; medians reported (default 3)")
    ap.add_argument("--limit-seconds", type=float, default=5, help="how long onnxruntime alone runs per round (default 5)")
    args = ap.parse_args()
    env = environment()
    feeds, model = preprocessed_frames(), os.path.join(FIXTURES, "models", "detect", "nanodet_m_416.onnx")
    runs = {"limit": [], "python": [], "ort": [], "tract": []}
    lags = {"ort": [], "tract": []}
    boxes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            # The limit in every round too: this machine's speed drifts between rounds.
            fps, workers = onnxruntime_alone(model, feeds, args.limit_seconds)
            runs["limit"].append(fps)
            fps, boxes["python"] = python_run(args.passes, env)
            runs["python"].append(fps)
            for backend in ("ort", "tract"):
                fps, boxes[backend], lag = strix_run(backend, args.passes, env, os.path.join(tmp, "events.jsonl"))
                runs[backend].append(fps)
                lags[backend].append(lag)
    print(f"NanoDet-m 416 on {os.path.basename(VIDEO)} x {args.passes} ({FRAMES * args.passes} frames), "
          f"{os.cpu_count()} cores, median of {args.rounds} rounds, each side timed from start to exit")
    py, limit = statistics.median(runs["python"]), statistics.median(runs["limit"])
    print(f"  limit: onnxruntime alone ({workers} workers x 1 thread, preprocessed frames): {limit:6.1f} frames/s")
    print(f"  python (OpenCV + onnxruntime): {py:6.1f} frames/s   {100 * py / limit:.0f}% of the limit")
    for backend in ("ort", "tract"):
        ours = statistics.median(runs[backend])
        same, total = agreement(boxes["python"], boxes[backend])
        print(f"  strix stream --backend {backend:<5}  : {ours:6.1f} frames/s   {100 * ours / limit:.0f}% of the limit   "
              f"ratio {ours / py:.2f}x python   (lag p50 {statistics.median(lags[backend]):.0f} ms; boxes agree "
              f"{same}/{total})")
        if total == 0 or same < 0.95 * total:
            sys.exit(f"strix --backend {backend} and the Python peer disagree: the rates compare different work")
    null = statistics.median(ffmpeg_fps("-pix_fmt", "rgb24", "-f", "null", "-") for _ in range(3))
    pipe = statistics.median(ffmpeg_fps("-f", "image2pipe", "-c:v", "ppm", "-") for _ in range(3))
    print(f"  ffmpeg decode + RGB conversion only: {null:.0f} frames/s; + PPM into a pipe: {pipe:.0f} frames/s")


if __name__ == "__main__":
    main()
