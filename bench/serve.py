#!/usr/bin/env python3
"""HTTP inference under load: `strix serve` against its limits and against FastAPI + uvicorn +
onnxruntime.

Every server classifies with EfficientNet-Lite0 (the fixture weights, given a free batch
dimension so Strix can batch): a POSTed JPEG is decoded, its shorter side resized to 256,
centre-cropped to 224, normalised, classified; the top 5 come back as JSON.

- Limit: onnxruntime alone, the same model on preprocessed inputs (no decoding, no HTTP), as
  many workers as cores with one thread each (what `strix serve` runs), one image per run.
- End-to-end limit: `strix predict --backend ort` over the same photos (decode, preprocess,
  infer, top-5, every core), timed from outside.
- Strix: `strix serve --backend ort` (release build), dynamic batching (max batch 8, 2 ms),
  and the same with `--fast-decode`.
- Python: FastAPI + uvicorn (one worker), Pillow + numpy + onnxruntime, the work in FastAPI's
  thread pool (what a plain `def` handler gets), as such services are usually written: once
  with onnxruntime's default threads (every core for each request), once with one onnxruntime
  thread per request (the connections' requests side by side in the pool: the
  better-configured peer).

Load: `wrk` (C, Debian's package; it leaves the cores to the servers far more than a Python
client would) with `--concurrency` keep-alive connections for `--seconds`, POSTing the fixture
photos in turn: requests/s, p50/p99 latency, errors, Strix's batch sizes. Then Strix alone: cold
start (process start to first answer) and an overload run (`--overload` Python clients against
a queue of 8) counting 503s, sampling the server's RSS, and checking it answers afterwards.

Usage: bench/serve.py [--seconds 20] [--concurrency 8] [--overload 64]   (after ./scripts/setup;
apt-get install wrk). Installs fastapi and uvicorn into the venv on first use.
"""
import argparse
import glob
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from strix_run import FIXTURES, ROOT, efficientnet_input, environment, onnxruntime_alone, strix_binary, timed

PY_SERVER = r'''
import io, sys
import numpy as np, onnxruntime as ort
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
import uvicorn
sys.path.insert(0, sys.argv[4])
from strix_run import efficientnet_input, softmax

options = ort.SessionOptions()
if sys.argv[5] == "one-thread":
    # One ONNX Runtime thread per request: the thread pool runs the connections' requests side
    # by side instead of one request at a time on every core.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
labels = open(sys.argv[2]).read().splitlines()
app = FastAPI()

def classify(body):
    p = softmax(session.run(None, {"input": efficientnet_input(io.BytesIO(body))})[0][0])
    top = np.argsort(-p)[:5]
    return {"Labels": [{"Name": labels[i], "Confidence": float(100 * p[i]), "ClassId": int(i)} for i in top]}

@app.post("/predict")
async def predict(request: Request):
    body = await request.body()
    # CPU work in the thread pool, as a plain `def` handler would run.
    return await run_in_threadpool(classify, body)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning")
'''


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
    r = conn.getresponse()
    r.read()
    return r.status


def wait_ready(port, path, body, proc, timeout=120):
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if post(conn, path, body) == 200:
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.02)
    sys.exit(f"server on port {port} did not answer within {timeout} s")


def rss_mib(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def load(port, path, bodies, seconds, concurrency, pid=None):
    """`concurrency` threads posting for `seconds`; returns stats."""
    stop = time.perf_counter() + seconds
    lat, statuses, lock = [], {}, threading.Lock()
    peak = [0.0]

    def client(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                status = post(conn, path, bodies[i % len(bodies)])
            except (OSError, http.client.HTTPException):
                status = "conn-error"
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    lat.append(dt)
            i += 1

    def sample():
        while time.perf_counter() < stop:
            peak[0] = max(peak[0], rss_mib(pid))
            time.sleep(0.1)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    if pid:
        threads.append(threading.Thread(target=sample))
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else float("nan")
    return {"rps": statuses.get(200, 0) / took, "p50": q(0.50), "p99": q(0.99), "statuses": statuses, "rss": peak[0]}


WRK_SCRIPT = r'''
local bodies, i = {}, 0
for path in io.lines(os.getenv("STRIX_BENCH_BODIES")) do
  local f = assert(io.open(path, "rb"))
  bodies[#bodies + 1] = f:read("*a")
  f:close()
end
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", nil, {["Content-Type"] = "image/jpeg"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %d %d %f %f %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
'''


def wrk(port, path, files, seconds, connections, tmp):
    """`wrk` POSTing `files` in turn: requests/s, p50 and p99 in ms, failed requests."""
    script, listing = os.path.join(tmp, "post.lua"), os.path.join(tmp, "bodies.txt")
    open(script, "w").write(WRK_SCRIPT)
    open(listing, "w").write("\n".join(files) + "\n")
    # wrk reads whole seconds only: "-d15.0s" is a usage error.
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "-s", script,
           f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, STRIX_BENCH_BODIES=listing))
    line = next((l for l in out.stdout.splitlines() if l.startswith("WRK ")), None)
    if line is None:
        sys.exit(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
    n, micros, p50, p99, failed, non2xx = line.split()[1:]
    return {"rps": int(n) / (int(micros) / 1e6), "p50": float(p50) / 1000, "p99": float(p99) / 1000,
            "statuses": {"failed": int(failed) + int(non2xx)}, "rss": 0.0}


def measured(port, path, server, files, bodies, seconds, connections, tmp):
    """`server`'s wrk figures on `path` once it answers and after 2 s of warm-up, with its cold
    start (seconds from launch to its first answer) as "cold"."""
    cold = wait_ready(port, path, bodies[0], server)
    wrk(port, path, files, 2, connections, tmp)
    result = wrk(port, path, files, seconds, connections, tmp)
    result["cold"] = cold
    return result


def predict_limit(spec_path, files, env, repeat=40):
    """Images/s of `strix predict --backend ort` over the photos `repeat` times (every core),
    timed from outside, model load included."""
    took, _ = timed([strix_binary(), "predict", "--quiet", "--json", "--backend", "ort", "--model", spec_path,
                     *(files * repeat)], env)
    return len(files) * repeat / took


def dynamic_batch_model(tmp):
    """The fixture EfficientNet-Lite0 with a symbolic batch dimension, and its spec."""
    import onnx

    model = onnx.load(os.path.join(FIXTURES, "models/classify/efficientnet_lite0.onnx"))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    onnx_path = os.path.join(tmp, "effnet.onnx")
    onnx.save(model, onnx_path)
    spec = subprocess.run(
        [strix_binary(), "models", "show", "efficientnet_lite0", "--toml"],
        capture_output=True, text=True, check=True, env=dict(os.environ, STRIX_MODEL_PATH=os.path.join(FIXTURES, "models")),
    ).stdout
    lines, section = [], ""
    for line in spec.splitlines():
        if line.startswith("["):
            section = line
        if section == "[weights]" and line.startswith(("sha256", "size")):
            continue
        if section == "[weights]" and line.startswith("file"):
            line = 'file = "effnet.onnx"'
        lines.append(line)
    spec_path = os.path.join(tmp, "effnet.toml")
    open(spec_path, "w").write("\n".join(lines) + "\n")
    os.makedirs(os.path.join(tmp, "classify"), exist_ok=True)
    labels = os.path.join(tmp, "classify/imagenet_labels.txt")
    open(labels, "w").write(open(os.path.join(FIXTURES, "models/classify/imagenet_labels.txt")).read())
    return onnx_path, spec_path, labels


def report(name, r):
    errors = sum(n for s, n in r["statuses"].items() if s != 200)
    print(f"  {name:<34} {r['rps']:7.1f} req/s   p50 {r['p50']:6.1f} ms   p99 {r['p99']:6.1f} ms   errors {errors}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--overload", type=int, default=64, help="clients in the overload run (queue of 8)")
    ap.add_argument("--photo-scale", type=int, default=1,
                    help="enlarge the photos this many times (bilinear, JPEG quality 92) to camera sizes (default 1)")
    args = ap.parse_args()
    env = environment()
    py = sys.executable
    try:
        import fastapi, uvicorn  # noqa: F401
    except ImportError:
        subprocess.run([py, "-m", "pip", "install", "-q", "fastapi", "uvicorn"], check=True)
    files = sorted(glob.glob(os.path.join(FIXTURES, "images/*.jpg")))
    strix = strix_binary()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk (a C load generator, so the client does not take the cores)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.photo_scale > 1:
            from PIL import Image

            big = []
            for f in files:
                im = Image.open(f).convert("RGB")
                im = im.resize((im.width * args.photo_scale, im.height * args.photo_scale), Image.BILINEAR)
                big.append(os.path.join(tmp, os.path.basename(f)))
                im.save(big[-1], quality=92)
            files = big
        bodies = [open(p, "rb").read() for p in files]
        onnx_path, spec_path, labels = dynamic_batch_model(tmp)

        def strix_server(port, *extra):
            cmd = [strix, "serve", "--quiet", "--backend", "ort", "--model", f"effnet={spec_path}", "--port", str(port)]
            return subprocess.Popen(cmd + ["--max-batch", "8", "--max-delay-ms", "2", *extra], env=env)

        def strix_run(*extra):
            port = free_port()
            server = strix_server(port, *extra)
            result = measured(port, "/v1/models/effnet/predict", server, files, bodies, args.seconds,
                              args.concurrency, tmp)
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("GET", "/v1/models")
            result["batches"] = json.loads(conn.getresponse().read())["models"][0]["batches"]
            server.terminate()
            server.wait()
            return result

        limit, workers = onnxruntime_alone(onnx_path, [{"input": efficientnet_input(f)} for f in files], args.seconds)
        e2e = predict_limit(spec_path, files, env)
        ours = strix_run()
        fast = strix_run("--fast-decode")

        script = os.path.join(tmp, "pyserver.py")
        open(script, "w").write(PY_SERVER)

        def python_run(threads):
            port = free_port()
            here = os.path.dirname(os.path.abspath(__file__))
            pyserver = subprocess.Popen([py, script, onnx_path, labels, str(port), here, threads])
            result = measured(port, "/predict", pyserver, files, bodies, args.seconds, args.concurrency, tmp)
            pyserver.terminate()
            pyserver.wait()
            return result

        theirs = python_run("default")
        one_thread = python_run("one-thread")

        print(f"EfficientNet-Lite0 over HTTP, wrk {args.concurrency} connections x {args.seconds:.0f} s, loopback, "
              f"{os.cpu_count()} cores, {len(files)} photos in turn (x{args.photo_scale} size)")
        print(f"  limit: onnxruntime alone ({workers} workers x 1 thread, preprocessed, batch 1): {limit:.1f} inferences/s")
        print(f"  end-to-end limit: strix predict --backend ort (decode + preprocess + infer): {e2e:.1f} images/s")
        report("python (FastAPI+uvicorn+onnxruntime)", theirs)
        report("python, 1 onnxruntime thread/request", one_thread)
        report("strix serve --backend ort", ours)
        report("strix serve --fast-decode", fast)
        for name, r in [("strix serve", ours), ("strix serve --fast-decode", fast)]:
            print(f"  {name}: {100 * r['rps'] / e2e:.0f}% of the end-to-end limit, {100 * r['rps'] / limit:.0f}% of "
                  f"onnxruntime alone, {r['rps'] / theirs['rps']:.2f}x python, {r['rps'] / one_thread['rps']:.2f}x python "
                  f"with one thread per request; p99 {r['p99']:.1f} vs {theirs['p99']:.1f} / {one_thread['p99']:.1f} ms")
        sizes = ", ".join("%d: %d" % (b["size"], b["count"]) for b in ours["batches"])
        print(f"  strix batch sizes (size: batches): {sizes}")
        print(f"  strix cold start (process start to first answer): {ours['cold']:.2f} s")

        port = free_port()
        server = strix_server(port, "--queue", "8")
        wait_ready(port, "/v1/models/effnet/predict", bodies[0], server)
        over = load(port, "/v1/models/effnet/predict", bodies, 10, args.overload, server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        after = post(conn, "/v1/models/effnet/predict", bodies[0])
        alive = server.poll() is None
        server.terminate()
        server.wait()
        print(
            f"  overload, {args.overload} clients vs a queue of 8 for 10 s: statuses {over['statuses']}, "
            f"peak RSS {over['rss']:.0f} MiB, next request {after}, server alive: {alive}"
        )


if __name__ == "__main__":
    main()
